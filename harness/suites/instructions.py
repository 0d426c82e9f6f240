"""Seeded one-line instructions for the offline real-model suite (``data.kind: synthetic_instructions``).

Each document is a whole instruction ("Write a short review of a wooden chess set.") that an instruct
model answers; with ``prompts.kind: document`` every distinct instruction is one prompt, and the
harness splits prompts into training and evaluation sides by their text. The instructions ask for an
opinion on an everyday thing but carry no sentiment themselves (neither the task phrases nor the items
use words in VADER's lexicon), so the reply alone decides the gold reward (VADER on the completion).

Output is a pure function of ``(n, seed)`` (a private ``random.Random``), and ``generate_instructions(m,
seed)`` is a prefix of ``generate_instructions(n, seed)`` for ``m <= n``. No third-party dependencies.
"""
from __future__ import annotations

import random

__all__ = ["GENERATOR_VERSION", "generate_instructions", "TASKS", "ITEMS"]

# Bump whenever the text produced for a given (n, seed) changes: it is part of every derived cache key.
GENERATOR_VERSION = 1

TASKS = (
    "Write a short review of {item}.",
    "Write a two-line review of {item}.",
    "Describe {item} in two lines.",
    "Give your opinion of {item} in one line.",
    "Write a short customer review of {item}.",
    "In a few words, review {item}.",
    "Tell me what you think of {item}, briefly.",
    "Write one line about {item}.",
)

_SIZES = ("", "small ", "large ", "new ", "old ", "second-hand ", "local ", "family-run ")

_THINGS = (
    "pizza place", "coffee shop", "bakery", "bookshop", "train station", "hotel", "hostel", "museum",
    "city park", "public library", "barber shop", "bike shop", "hardware store", "food market",
    "noodle bar", "ice rink", "bowling alley", "cinema", "car wash", "dentist", "gym", "campsite",
    "ferry", "night bus", "taxi company", "laundromat", "post office", "garden centre", "zoo", "aquarium",
    "kettle", "toaster", "desk lamp", "office chair", "backpack", "rain jacket", "pair of boots",
    "phone case", "laptop stand", "keyboard", "pair of headphones", "wall clock", "water bottle",
    "umbrella", "tent", "sleeping bag", "frying pan", "blender", "board game", "jigsaw puzzle",
    "paperback book", "cookbook", "podcast", "radio station", "video game", "card game", "wristwatch",
    "bicycle", "scooter", "sofa", "mattress", "bookshelf", "wooden chess set", "garden hose",
)

_PLACES = ("", " in the city centre", " near the station", " on the high street", " by the river",
           " in a small town", " at the airport", " on the seafront")


def generate_instructions(n: int, seed: int) -> list[str]:
    """``n`` instructions (repeats possible; the harness deduplicates prompts by text)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        thing = rng.choice(_THINGS)
        size = rng.choice(_SIZES)
        place = rng.choice(_PLACES) if rng.random() < 0.5 else ""
        article = "an" if (size or thing)[0] in "aeiou" else "a"
        out.append(rng.choice(TASKS).format(item=f"{article} {size}{thing}{place}"))
    return out


ITEMS = _THINGS
