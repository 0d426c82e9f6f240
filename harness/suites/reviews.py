"""Seeded synthetic movie-review corpus for the offline "sentiment" suite.

The suite is a small analogue of the IMDb controlled-sentiment experiment of
the DPO paper: a tiny GPT-2 is pre-trained from scratch on reviews produced
here, then it continues short review prefixes (the first 2-5 words) and the
VADER compound score of its continuation is the gold reward.

Design constraints that the grammar below is built around:

* Openings are sentiment-neutral and varied ("I watched this film last
  weekend", "The story follows a retired teacher", "My wife and I saw this"),
  so that a prompt made of the first few words carries no sentiment and the
  continuation written by the policy decides the reward.
* Every review draws a latent sentiment ``s`` in [-1, 1]. Each evaluative
  clause draws its own polarity from ``s`` (strongly positive reviews are
  almost uniformly positive, reviews near zero mix praise and criticism,
  often inside one contrast sentence with "but", "although" or "while").
* Sentiment appears early (usually in the first sentence, otherwise in the
  second) and in several places, so a continuation of 30-50 tokens already
  carries it.  Most evaluative words are in VADER's lexicon; a few common
  critic words that VADER does not know ("bland", "predictable") are mixed in
  for realism.
* Output is a pure function of ``(n, seed)``: only a private
  ``random.Random(seed)`` is used, and ``generate_reviews(m, seed)`` is a
  prefix of ``generate_reviews(n, seed)`` for ``m <= n``.

This module has no third-party dependencies.
"""

from __future__ import annotations

import math
import random

__all__ = [
    "GENERATOR_VERSION",
    "MIN_WORDS",
    "MAX_WORDS",
    "generate_reviews",
    "review_prefix",
    "make_prompts",
]

# Bump whenever the text produced for a given (n, seed) changes; it is part of
# the cache key of every artefact derived from the corpus.
GENERATOR_VERSION = 1

MIN_WORDS = 15
MAX_WORDS = 60
MAX_SENTENCES = 4

# ---------------------------------------------------------------------------
# Neutral building blocks.  These appear in openings and plot summaries, so
# they deliberately avoid words that VADER scores (e.g. "comedy", "romance",
# "friend", "war", "crime", "lonely", "villain" are all in its lexicon).
# ---------------------------------------------------------------------------

_FILM = (
    "movie", "film", "picture", "drama", "western", "mystery", "documentary",
    "musical", "biopic", "sequel", "remake", "period piece", "detective story",
    "family drama", "courtroom drama", "road movie", "spy film",
    "political drama", "costume drama", "animated film", "indie film",
    "sports drama", "character study", "space opera", "heist film",
    "coming of age story", "science fiction film", "historical epic",
    "monster movie", "martial arts film", "nature documentary",
    "ensemble piece", "debut feature", "boxing film", "dance film",
    "submarine film", "silent film",
)

_FIRST = (
    "Marcus", "Elena", "Tom", "Sarah", "David", "Nora", "James", "Clara",
    "Daniel", "Maya", "Oliver", "Ruth", "Henry", "Julia", "Samuel", "Lucy",
    "Victor", "Anna", "Leo", "Rachel", "Peter", "Iris", "Walter", "Helen",
)
_LAST = (
    "Hale", "Moreno", "Whitaker", "Brennan", "Castillo", "Lindqvist",
    "Okafor", "Sullivan", "Harper", "Novak", "Fischer", "Reyes", "Dalton",
    "Kimura", "Lowell", "Caldwell", "Ortega", "Pryce", "Ward", "Foster",
)

_RELATIVE = (
    "wife", "husband", "brother", "sister", "dad", "mom", "roommate",
    "girlfriend", "boyfriend", "son", "daughter", "neighbor", "cousin",
    "grandmother", "uncle", "coworker",
)

_WHEN = (
    "last night", "last weekend", "on a Sunday afternoon", "on a long flight",
    "at the local cinema", "at a small theater downtown", "on opening night",
    "during the winter", "on a Friday night", "after work on Tuesday",
    "at a late screening", "on television last week", "at home on Saturday",
    "during a road trip", "a few days ago", "on streaming this week",
)

_REASON = (
    "because of the cast", "because my sister suggested it",
    "after seeing the trailer", "because I had read the book",
    "on a whim", "because nothing else was on",
    "because I follow the director", "after reading a few reviews",
    "because it was on sale", "for a school assignment",
)

_PRIOR = (
    "knew almost nothing about it", "had read the book",
    "had seen the first one", "did not know what to expect",
    "had heard a lot about it", "expected a simple night out",
    "had only seen the trailer", "wanted to see what the director did next",
)

_PROTAGONIST = (
    "a retired teacher", "a young lawyer", "a small town mechanic",
    "an aging jazz musician", "a newspaper reporter", "a family of farmers",
    "a ship captain", "a high school student", "a former boxer",
    "a park ranger", "an architect", "a country singer",
    "a lighthouse keeper", "a chess player", "a night nurse",
    "a cargo pilot", "a traveling salesman", "a museum curator",
    "a college professor", "an elderly couple", "three brothers",
    "a single father", "a marine biologist", "a hotel manager",
    "two sisters", "a young chef", "a police detective", "a radio host",
)

_GROUP_PROTAGONISTS = frozenset(
    p for p in _PROTAGONIST
    if p.split()[0] in ("two", "three") or p.split()[1] in ("family", "elderly")
)

# (place, preposition used for being there).
_SETTING = (
    ("a small fishing village", "in"), ("rural Montana", "in"),
    ("Chicago in the seventies", "in"), ("a remote island", "on"),
    ("a mountain town", "in"), ("a quiet suburb", "in"),
    ("the Scottish highlands", "in"), ("a boarding school in England", "at"),
    ("a space station", "on"), ("Paris", "in"),
    ("a desert town in Arizona", "in"), ("coastal Maine", "in"),
    ("downtown Los Angeles", "in"), ("rural Iowa", "in"),
    ("New York in the eighties", "in"), ("a port city in Portugal", "in"),
    ("a ski resort", "at"), ("a research base in Antarctica", "at"),
    ("a cattle ranch in Texas", "on"), ("a busy train station", "at"),
    ("a village in southern Italy", "in"), ("a lakeside cabin", "at"),
)

# "{to}" is the bare place, "{at}" the place with its preposition.
_ACTION = (
    "who moves to {to}", "who returns to {to} after twenty years",
    "who takes a job {at}", "who inherits an old house {at}",
    "who spends one long summer {at}",
    "who is hired to write a biography", "who decides to run for mayor",
    "who starts a band with the neighbors",
    "who signs up to coach a school team",
    "who travels across the country by train",
    "who opens a restaurant {at}",
    "who tries to finish an old family project",
    "who goes looking for an old letter",
    "who enters a national cooking contest",
    "who is sent to write about {to}",
    "who builds a boat in the backyard",
    "who looks after an old horse",
    "who learns to play the cello",
    "who plans a wedding {at}",
    "who spends a winter {at}",
)

# Verb agreement for plural protagonists ("two sisters who move ...").
_PLURAL_VERB = {
    "moves": "move", "returns": "return", "takes": "take",
    "inherits": "inherit", "spends": "spend", "is": "are",
    "decides": "decide", "starts": "start", "signs": "sign",
    "travels": "travel", "opens": "open", "tries": "try", "goes": "go",
    "enters": "enter", "builds": "build", "learns": "learn",
    "plans": "plan", "looks": "look",
}

_FIRST_HEARD = (
    "I was not sure what to make of it", "I did not know what to expect",
    "I assumed it was a remake", "I put it on my list",
    "I wrote it down to watch later", "I read a little about the director",
)

_ROLE = (  # gender-neutral, since they follow random names
    "the detective", "the mayor", "the ship captain", "the young teacher",
    "the lawyer", "the rancher", "the reporter", "the chef", "the pianist",
    "the coach", "the landlord", "the scientist", "the neighbor",
    "the professor", "the doctor", "the sheriff", "the pilot",
    "the eldest sibling", "the new principal", "the bookshop owner",
)

_CREW = (
    "the director", "the screenwriter", "the composer", "the cinematographer",
    "the editor", "the lead actress", "the lead actor", "the young star",
    "the writers", "the filmmakers",
)

_ORDINAL = ("second", "third", "fourth", "latest", "first")
_DURATION = (
    "ninety minutes", "about two hours", "nearly three hours",
    "just under two hours", "a little over an hour and a half",
)

# ---------------------------------------------------------------------------
# Aspects of a film that a review can judge: (noun phrase, group, plural).
# The group selects extra adjectives that fit the aspect.
# ---------------------------------------------------------------------------

_ASPECTS = (
    ("acting", "act", False), ("performances", "act", True),
    ("cast", "act", False), ("lead performance", "act", False),
    ("chemistry between the leads", "act", False),
    ("script", "write", False), ("screenplay", "write", False),
    ("dialogue", "write", False), ("plot", "write", False),
    ("story", "write", False), ("storyline", "write", False),
    ("ending", "write", False), ("final act", "write", False),
    ("characters", "write", True), ("twist", "write", False),
    ("cinematography", "visual", False), ("camera work", "visual", False),
    ("photography", "visual", False), ("lighting", "visual", False),
    ("production design", "visual", False), ("set design", "visual", False),
    ("costumes", "visual", True), ("effects work", "visual", False),
    ("visual effects", "visual", True), ("action sequences", "visual", True),
    ("score", "sound", False), ("soundtrack", "sound", False),
    ("music", "sound", False), ("sound design", "sound", False),
    ("songs", "sound", True),
    ("pacing", "pace", False), ("editing", "pace", False),
    ("first hour", "pace", False), ("second half", "pace", False),
    ("middle section", "pace", False), ("direction", "pace", False),
    ("supporting players", "act", True), ("child actors", "act", True),
    ("narration", "write", False), ("world building", "write", False),
    ("climax", "write", False), ("landscapes", "visual", True),
    ("color palette", "visual", False), ("makeup", "visual", False),
    ("stunts", "visual", True), ("theme song", "sound", False),
    ("orchestral score", "sound", False), ("flashbacks", "pace", True),
    ("opening scene", "pace", False),
)

# Graded evaluative adjectives: generic ones fit any aspect.
_ADJ = {
    2: ("brilliant", "wonderful", "superb", "excellent", "outstanding",
        "fantastic", "amazing", "great", "perfect", "terrific", "marvelous",
        "splendid", "remarkable", "magnificent"),
    1: ("good", "nice", "solid", "fine", "enjoyable", "pleasant", "effective",
        "impressive", "competent", "decent", "engaging", "entertaining",
        "strong", "fresh", "charming"),
    -1: ("weak", "dull", "boring", "messy", "poor", "bad", "disappointing",
         "lame", "tired", "unimpressive", "frustrating", "flawed",
         "repetitive", "bland", "mediocre", "forgettable"),
    -2: ("terrible", "awful", "horrible", "dreadful", "pathetic",
         "disastrous", "lousy", "appalling", "dismal", "embarrassing",
         "painful", "atrocious"),
}
_GROUP_ADJ = {
    "act": {2: ("powerful", "heartfelt", "superb"),
            1: ("convincing", "natural", "confident", "likeable"),
            -1: ("wooden", "awkward", "irritating", "unconvincing"),
            -2: ("painfully bad", "painfully stiff", "embarrassing")},
    "write": {2: ("fascinating", "brilliant", "heartfelt"),
              1: ("clever", "smart", "thoughtful", "intelligent", "witty"),
              -1: ("predictable", "confusing", "lazy", "foolish", "unfocused"),
              -2: ("stupid", "ridiculous", "insulting", "dumb", "incoherent")},
    "visual": {2: ("gorgeous", "breathtaking", "beautiful", "stunning"),
               1: ("elegant", "handsome", "lovely", "vivid"),
               -1: ("cheap", "dreary", "fake", "murky"),
               -2: ("ugly", "hideous", "awful", "terrible")},
    "sound": {2: ("beautiful", "gorgeous", "wonderful"),
              1: ("lovely", "memorable", "sweet", "lively"),
              -1: ("annoying", "irritating", "repetitive", "forgettable"),
              -2: ("horrible", "awful", "painful", "unbearable")},
    "pace": {2: ("perfect", "excellent", "masterful"),
             1: ("brisk", "tight", "confident", "efficient"),
             -1: ("slow", "sluggish", "tedious", "boring", "tired"),
             -2: ("painfully slow", "dreadful", "terrible")},
}

_INTENS_POS = ("very", "really", "truly", "absolutely", "incredibly",
               "remarkably", "simply", "extremely")
_INTENS_NEG = ("very", "really", "truly", "absolutely", "utterly",
               "simply", "extremely", "totally")
_MILD_POS = ("quite", "fairly", "mostly", "reasonably")
_MILD_NEG = ("a bit", "somewhat", "rather", "slightly")

# Mild judgements expressed through negation.
_NEGATED = {
    1: ("not bad at all", "never boring", "not bad", "never dull",
        "not weak at all", "never disappointing"),
    -1: ("not good", "not very good", "never convincing", "not impressive",
         "not very effective", "not great"),
}

# Inline verdicts that complete "I watched this film last night, and ...".
_VERDICT = {
    2: ("it was {adj}", "it turned out to be {adj}", "I loved every minute of it",
        "I absolutely loved it", "it was a wonderful surprise",
        "it was far better than I expected", "I enjoyed it immensely",
        "it was one of the best things I have seen in years",
        "it blew me away", "it was a joy from start to finish",
        "it was a pure delight"),
    1: ("it was {adj}", "I enjoyed it", "I liked it more than I expected",
        "it was a pleasant surprise", "it was better than I expected",
        "I had a good time", "it was {adj} overall"),
    0: ("it was a mixed bag", "I have mixed feelings about it",
        "it was about what I expected", "it was okay in places",
        "I am still not sure what to think", "it was fine but uneven"),
    -1: ("it was {adj}", "I was disappointed", "I was bored for most of it",
         "it was worse than I expected", "it was {adj} overall",
         "I struggled to stay awake"),
    -2: ("it was {adj}", "I hated almost every minute of it",
         "it was a complete waste of time", "it was an absolute mess",
         "it was one of the worst things I have seen in years",
         "I regretted it within twenty minutes", "it was a total disaster",
         "it was {adj} from start to finish"),
}

# Reactions of the viewer (whole sentences).
_REACTION = {
    2: ("I laughed out loud more than once.",
        "I was smiling the whole way through.",
        "The whole audience applauded at the end!",
        "It kept me hooked until the very last scene.",
        "I was genuinely moved by the final scene.",
        "My whole family loved it.", "I have already watched it twice."),
    1: ("I laughed a few times.", "It held my interest most of the way.",
        "I was happy I gave it a chance.", "The time went by quickly.",
        "The kids enjoyed it too."),
    -1: ("I kept checking my watch.", "I nearly fell asleep halfway through.",
         "I was bored during long stretches.",
         "It felt much longer than it was.",
         "I checked my phone more than once.",
         "My mind kept drifting away."),
    -2: ("I was bored out of my mind.", "Half the audience walked out.",
         "I was annoyed by how lazy it all felt.",
         "Sitting through it was painful.", "I wanted my money back.",
         "I have never been so bored in a theater."),
}

_CLOSING = {
    2: ("Highly recommended!", "One of the best films I have seen this year.",
        "I would happily watch it again.", "Do not miss this one!",
        "An absolute gem.", "A wonderful experience from start to finish.",
        "A true masterpiece!",
        "I give it {n} out of ten."),
    1: ("Worth watching.", "I would recommend it.",
        "A nice way to spend an evening.", "Worth a look.",
        "I give it {n} out of ten."),
    0: ("Worth a look if you are patient.", "Your mileage may vary.",
        "I give it {n} out of ten.", "It is not for everyone."),
    -1: ("I would not recommend it.", "I expected much more.",
         "A real disappointment.",
         "Not worth your time.", "I give it {n} out of ten."),
    -2: ("Avoid this one!", "One of the worst films I have ever seen.",
         "A complete waste of time.", "Avoid at all costs.", "Stay away!",
         "I give it {n} out of ten."),
}
_SCORE_WORDS = {
    2: ("nine", "ten"), 1: ("seven", "eight"), 0: ("five", "six"),
    -1: ("three", "four"), -2: ("one", "two"),
}


# ---------------------------------------------------------------------------
# Grammar helpers.
# ---------------------------------------------------------------------------

def _a(word: str) -> str:
    """Indefinite article for ``word``."""
    return "an" if word[:1].lower() in "aeiou" else "a"


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _name(rng: random.Random) -> str:
    return f"{rng.choice(_FIRST)} {rng.choice(_LAST)}"


def _polarity(rng: random.Random, s: float) -> int:
    """Polarity in {-2, -1, 1, 2} of one evaluative clause of a review."""
    p_pos = 1.0 / (1.0 + math.exp(-6.0 * s))
    sign = 1 if rng.random() < p_pos else -1
    strong = rng.random() < 0.15 + 0.7 * abs(s)
    return sign * (2 if strong else 1)


def _adjective(rng: random.Random, pol: int, group: str | None = None) -> str:
    pool = _ADJ[pol]
    if group is not None and rng.random() < 0.4:
        pool = _GROUP_ADJ[group][pol]
    return rng.choice(pool)


def _adj_plain(rng: random.Random, pol: int, group: str | None = None) -> str:
    """Attributive adjective phrase, e.g. "really wonderful", "quite good"."""
    adj = _adjective(rng, pol, group)
    if " " in adj:  # already modified ("painfully slow")
        return adj
    r = rng.random()
    if abs(pol) == 2 and r < 0.45:
        return f"{rng.choice(_INTENS_POS if pol > 0 else _INTENS_NEG)} {adj}"
    if abs(pol) == 1 and r < 0.25:
        return f"{rng.choice(_MILD_POS if pol > 0 else _MILD_NEG)} {adj}"
    return adj


def _adj_pred(rng: random.Random, pol: int, group: str | None = None) -> str:
    """Predicative phrase; mild judgements are sometimes made by negation."""
    if abs(pol) == 1 and rng.random() < 0.2:
        return rng.choice(_NEGATED[pol])
    first = _adj_plain(rng, pol, group)
    if rng.random() < 0.2:
        second = _adjective(rng, pol, group)
        if second not in first:
            return f"{first} and {second}"
    return first


def _be(plural: bool, past: bool) -> str:
    if past:
        return "were" if plural else "was"
    return "are" if plural else "is"


def _aspect(rng: random.Random, exclude_group: str | None = None):
    while True:
        asp = rng.choice(_ASPECTS)
        if asp[1] != exclude_group:
            return asp


# ---------------------------------------------------------------------------
# Sentences.
# ---------------------------------------------------------------------------

def _experience_lead(rng: random.Random) -> str:
    """Neutral first clause about watching the film (no final punctuation)."""
    film = rng.choice(_FILM)
    k = rng.randrange(15)
    if k == 0:
        return f"I watched this {film} {rng.choice(_WHEN)}"
    if k == 12:
        return f"After a long week at work, I put on this {film}"
    if k == 13:
        return f"Everyone at work had been talking about this {film}"
    if k == 14:
        return f"I had seen the trailer for this {film} months ago"
    if k == 1:
        verb = rng.choice(("watched", "saw", "rented", "caught"))
        return f"My {rng.choice(_RELATIVE)} and I {verb} this {film} {rng.choice(_WHEN)}"
    if k == 2:
        return f"We saw this {film} {rng.choice(_WHEN)}"
    if k == 3:
        return f"I went to see this {film} {rng.choice(_WHEN)}"
    if k == 4:
        return f"I rented this {film} {rng.choice(_REASON)}"
    if k == 5:
        return f"Going into this {film}, I {rng.choice(_PRIOR)}"
    if k == 6:
        return f"I finally got around to watching this {film} {rng.choice(_WHEN)}"
    if k == 7:
        return f"I caught this {film} {rng.choice(_WHEN)}"
    if k == 8:
        return f"So I sat down to watch this {film} {rng.choice(_WHEN)}"
    if k == 9:
        return f"Our film club picked this {film} {rng.choice(_WHEN)}"
    if k == 10:
        return f"I only got around to this {film} {rng.choice(_WHEN)}"
    return f"When I first heard about this {film}, {rng.choice(_FIRST_HEARD)}"


def _summary_sentence(rng: random.Random) -> str:
    """Neutral first clause that summarises the premise (no final period)."""
    film = rng.choice(_FILM)
    prot = rng.choice(_PROTAGONIST)
    place, prep = rng.choice(_SETTING)
    action = rng.choice(_ACTION).format(to=place, at=f"{prep} {place}")
    if prot.split()[0] in ("two", "three"):
        words = action.split()
        words[1] = _PLURAL_VERB[words[1]]
        action = " ".join(words)
    k = rng.randrange(8)
    if k == 0:
        return f"The story follows {prot} {action}"
    if k == 1:
        return f"This {film} tells the story of {prot} {action}"
    if k == 2:
        return f"Set {prep} {place}, the {film} follows {prot}"
    if k == 3:
        return f"Directed by {_name(rng)}, this {film} follows {prot} {action}"
    if k == 4:
        if prot in _GROUP_PROTAGONISTS:  # "X stars as two sisters" is odd
            return f"The {film} follows {prot} {action}"
        return f"{_name(rng)} stars as {prot} {action}"
    if k == 5:
        return f"This is the {rng.choice(_ORDINAL)} {film} from director {_name(rng)}"
    if k == 6:
        return f"Based on a book by {_name(rng)}, the {film} follows {prot} {action}"
    return f"The {film} runs {rng.choice(_DURATION)} and follows {prot} {action}"


def _verdict(rng: random.Random, pol: int) -> str:
    template = rng.choice(_VERDICT[pol])
    if "{adj}" in template:
        return template.format(adj=_adj_pred(rng, pol))
    return template


def _evaluation(rng: random.Random, pol: int, past: bool) -> str:
    """One sentence judging an aspect of the film with polarity ``pol``."""
    name, group, plural = _aspect(rng)
    be = _be(plural, past)
    k = rng.randrange(10)
    if k <= 2:
        return f"The {name} {be} {_adj_pred(rng, pol, group)}."
    if k == 3:
        return f"I found the {name} {_adj_pred(rng, pol, group)}."
    if k == 4:
        person = _name(rng)
        return f"{person} {_be(False, past)} {_adj_pred(rng, pol, 'act')} as {rng.choice(_ROLE)}."
    if k == 5:
        adj = _adj_plain(rng, pol, "act")
        verb = "gave" if past else "gives"
        return f"{_name(rng)} {verb} {_a(adj)} {adj} performance as {rng.choice(_ROLE)}."
    if k == 6:
        adj = _adj_plain(rng, pol)
        crew = rng.choice(_CREW)
        verb = "did" if past else ("do" if crew.endswith("s") else "does")
        return f"{_cap(crew)} {verb} {_a(adj)} {adj} job with the {name}."
    if k == 7:
        if pol > 0:
            verb = rng.choice(("loved", "enjoyed", "really liked", "admired"))
        else:
            verb = rng.choice(("hated", "disliked", "could not stand", "was annoyed by"))
        return f"I {verb} the {name}."
    if k == 8:
        which = "best" if pol > 0 else "worst"
        return f"The {name} {be} easily the {which} part of the {rng.choice(('film', 'movie'))}."
    return rng.choice(_REACTION[pol])


def _contrast(rng: random.Random, first: int, second: int, past: bool) -> str:
    """Mixed sentence; the clause after the connective carries more weight."""
    n1, g1, p1 = _aspect(rng)
    # Contrast different kinds of aspect ("music" against "soundtrack" reads
    # as a contradiction, not as a mixed opinion).
    n2, g2, p2 = _aspect(rng, exclude_group=g1)
    a1 = _adj_pred(rng, first, g1)
    a2 = _adj_pred(rng, second, g2)
    b1, b2 = _be(p1, past), _be(p2, past)
    k = rng.randrange(4)
    if k == 0:
        return f"The {n1} {b1} {a1}, but the {n2} {b2} {a2}."
    if k == 1:
        return f"Although the {n1} {b1} {a1}, the {n2} {b2} {a2}."
    if k == 2:
        return f"The {n1} {b1} {a1}, while the {n2} {b2} {a2}."
    return f"{_name(rng)} {_be(False, past)} {a1} as {rng.choice(_ROLE)}, but the {n2} {b2} {a2}."


class _Judge:
    """Draws clause polarities for one review with latent sentiment ``s``.

    Clear reviews draw every clause independently from ``s``.  Mixed reviews
    (``|s|`` small) mostly steer each new clause against the running balance
    of earlier ones, so that praise and criticism roughly cancel out.
    """

    def __init__(self, rng: random.Random, s: float):
        self.rng = rng
        self.s = s
        self.mixed = abs(s) < 0.3
        self.balance = 0

    def __call__(self) -> int:
        rng = self.rng
        if self.mixed and self.balance != 0 and rng.random() < 0.75:
            pol = -1 if self.balance > 0 else 1
        else:
            pol = _polarity(rng, self.s)
            if self.mixed:
                pol = 1 if pol > 0 else -1
        self.balance += pol
        return pol


def _body_sentence(rng: random.Random, judge: _Judge, past: bool) -> str:
    if rng.random() < (0.55 if judge.mixed else 0.15):
        main = judge()
        minor = -1 if main > 0 else 1
        if not judge.mixed and rng.random() < 0.2:
            minor = -minor  # "the X is good, but the Y is even better"
        return _contrast(rng, minor, main, past)
    return _evaluation(rng, judge(), past)


def _draw_review(rng: random.Random) -> str:
    # Latent sentiment: a quarter of the reviews are deliberately mixed, the
    # rest spread over the whole range, slightly skewed positive like real
    # review sites.
    if rng.random() < 0.25:
        s = rng.uniform(-0.3, 0.3)
    else:
        s = max(-1.0, min(1.0, rng.uniform(-1.0, 1.0) + 0.05))
    judge = _Judge(rng, s)
    past = rng.random() < 0.6

    judged_opening = False
    if rng.random() < 0.65:
        lead = _experience_lead(rng)
        if rng.random() < 0.8:
            pol = 0 if judge.mixed and rng.random() < 0.6 else judge()
            opening = f"{lead}, and {_verdict(rng, pol)}."
            judged_opening = True
        else:
            opening = f"{lead}."
    else:
        summary = _summary_sentence(rng)
        if rng.random() < 0.3:
            pol = judge()
            opening = f"{summary}, and the result is {_adj_pred(rng, pol)}."
            judged_opening = True
        else:
            opening = f"{summary}."

    # A neutral opening is always followed by at least one judgement, so the
    # sentiment shows up early in any continuation of a short prefix.
    n_body = rng.choice((0, 1, 1, 2, 2, 3) if judged_opening else (1, 1, 2, 2, 3))
    body: list[str] = []
    for _ in range(n_body):
        sentence = _body_sentence(rng, judge, past)
        if any(x.split()[-3:] == sentence.split()[-3:] for x in body):
            sentence = _body_sentence(rng, judge, past)  # avoid echoes
        body.append(sentence)
    closing = []
    if rng.random() < 0.55:
        if judge.mixed and rng.random() < 0.7:
            pol = 0
        else:
            pol = judge()
        template = rng.choice(_CLOSING[pol])
        closing.append(template.format(n=rng.choice(_SCORE_WORDS[pol])))

    # Respect the sentence and word budgets by dropping later body sentences;
    # the opening, the first judgement and the closing verdict are kept.
    def n_words() -> int:
        return sum(len(x.split()) for x in [opening, *body, *closing])

    while len(body) > 1 and (
        1 + len(body) + len(closing) > MAX_SENTENCES or n_words() > MAX_WORDS
    ):
        body.pop()
    return " ".join(_cap(x) for x in [opening, *body, *closing])


# ---------------------------------------------------------------------------
# Public API.
# ---------------------------------------------------------------------------

def generate_reviews(n: int, seed: int) -> list[str]:
    """Return ``n`` synthetic English movie reviews, deterministic in (n, seed).

    Each review has 1-4 sentences and ``MIN_WORDS``-``MAX_WORDS`` words, a
    sentiment-neutral opening and sentiment expressed in several places of
    the rest.  ``generate_reviews(m, seed)`` equals the first ``m`` items of
    ``generate_reviews(n, seed)`` for ``m <= n``.
    """
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}")
    rng = random.Random(seed)
    out: list[str] = []
    while len(out) < n:
        text = _draw_review(rng)
        n_words = len(text.split())
        if MIN_WORDS <= n_words <= MAX_WORDS:
            out.append(text)
    return out


def review_prefix(review: str, n_words: int) -> str:
    """The first ``n_words`` whitespace-separated words of ``review``."""
    if n_words < 0:
        raise ValueError(f"n_words must be non-negative, got {n_words}")
    return " ".join(review.split()[:n_words])


def make_prompts(
    reviews: list[str], seed: int, min_words: int = 2, max_words: int = 5
) -> list[str]:
    """One prompt per review: its prefix of a seeded length in [min_words, max_words].

    Deterministic in (reviews, seed, min_words, max_words); the length drawn
    for review ``i`` does not depend on the review texts.  This helper makes no
    train/evaluation split: a suite's prompts are drawn, split by prompt text,
    in ``harness.execution.artifacts.make_prompts``.
    """
    if not 1 <= min_words <= max_words:
        raise ValueError(
            f"need 1 <= min_words <= max_words, got {min_words}, {max_words}"
        )
    rng = random.Random(seed)
    return [
        review_prefix(review, rng.randint(min_words, max_words))
        for review in reviews
    ]
