"""Sentences of the MiniLM accuracy checks (``tests/models``, ``benchmarks/minilm_accuracy.py``).

None of them is in the calibration set (``host/models/calibration.txt``). ``EVAL`` spans 4 to
about 120 tokens; ``PAIRS`` are (a, b) sentence pairs from close paraphrases to unrelated, whose
similarity order the integer encoder must keep.
"""

EVAL = [
    "Hi!",
    "A man is eating food.",
    "A man is riding a horse.",
    "The new movie is awesome.",
    "Scientists have discovered a new species of frog in the rainforests of South America.",
    "The weather forecast says it will be sunny with a light breeze in the afternoon, and "
    "cooler in the evening.",
    "After years of negotiations, the two countries finally signed a trade agreement that "
    "lowers tariffs on agricultural products, cars and electronics, although critics warn "
    "that small farmers may lose out.",
    "The library will be closed on Monday for maintenance; books can still be returned through "
    "the drop box next to the main entrance, and online services such as e-book loans, "
    "catalogue searches and renewals will remain available throughout the day. Visitors who "
    "booked study rooms will be contacted by email and offered a new time later in the week, "
    "and the children's reading hour moves to Tuesday afternoon.",
    "def add(a, b): return a + b  # a tiny Python function",
    "When the old railway line was closed in the nineteen-sixties, the villages along the "
    "valley lost their direct connection to the city, and for decades the only way to travel "
    "was a slow bus that stopped at every farm gate. Now a group of volunteers has restored "
    "the track, repaired two stone bridges and rebuilt the little station at the end of the "
    "line, where a café, a bicycle workshop and a small museum about the valley's history "
    "welcome visitors every weekend from April to October, and the regional council is "
    "studying whether regular trains could run again.",
    "Ich habe heute keine Zeit, aber morgen können wir uns treffen.",
]

PAIRS = [
    ("A man is eating food.", "A man is eating a piece of bread."),
    ("A man is eating food.", "A man is riding a horse."),
    ("The girl is carrying a baby.", "A woman is holding an infant in her arms."),
    ("The cat sleeps on the sofa.", "Interest rates rose by half a percent."),
    ("How do I bake bread at home?", "What is the easiest recipe for homemade bread?"),
    ("A monkey is playing drums.", "Someone in a gorilla costume is playing a set of drums."),
    ("The stock market crashed.", "A child is flying a kite on the beach."),
    ("Two men are playing chess.", "Two people are playing a board game."),
]
