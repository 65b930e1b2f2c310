"""The training prompt set: chat prompts written for specchat, built from templates.

The drafter learns to predict the target's own answers, so what matters is that the
prompts cover the kinds of chat a user brings (and the kinds `specchat bench`
measures: conversation, translation, summarization, questions, arithmetic,
answering from documents) without copying the benchmark's prompts. Every prompt is
a template filled from small word lists with a seeded RNG, so the set is
reproducible from (seed, count) alone. These are the first turns; followups.py builds
the rest of the set on the target's answers to them.
"""

from __future__ import annotations

import random

TOPICS = (
    "photosynthesis", "black holes", "the water cycle", "volcanoes", "earthquakes", "vaccines",
    "the immune system", "electric cars", "solar panels", "wind turbines", "recycling",
    "the Roman Empire", "the printing press", "the Industrial Revolution", "democracy",
    "the stock market", "interest rates", "credit cards", "budgeting", "saving for retirement",
    "machine learning", "the internet", "encryption", "cloud computing", "databases",
    "coffee", "tea", "bread baking", "composting", "gardening", "houseplants", "bird migration",
    "honey bees", "coral reefs", "rainforests", "deserts", "glaciers", "the moon", "Mars",
    "the human heart", "sleep", "exercise", "meditation", "nutrition", "hydration",
    "chess", "football", "jazz", "classical music", "photography", "painting", "poetry",
    "public speaking", "time management", "remote work", "job interviews", "learning a language",
    "friendship", "kindness", "dogs", "cats", "horses", "dinosaurs", "bicycles", "trains",
    "airplanes", "the ocean", "rain", "snow", "thunderstorms", "rainbows", "magnets",
    "electricity", "batteries", "gravity", "light", "sound", "atoms", "DNA", "evolution",
    "antibiotics", "the brain", "memory", "habits", "motivation", "libraries", "museums",
)

# The wide set's topics beyond those: everyday things and ideas a user asks about, so
# questions reach beyond one field.
_MORE_TOPICS = (
    "microwaves", "smartphones", "touch screens", "GPS", "Wi-Fi", "email", "passwords", "spam",
    "search engines", "social media", "video games", "3D printing", "robots", "drones",
    "satellites", "rockets", "the space station", "telescopes", "microscopes", "lasers",
    "plastic", "glass", "steel", "concrete", "paper", "cotton", "wool", "rubber", "soap",
    "vinegar", "yeast", "cheese", "chocolate", "rice", "potatoes", "spices", "olive oil",
    "sugar", "salt", "vitamins", "allergies", "the common cold", "fever", "headaches",
    "blood pressure", "the lungs", "the skin", "bones", "muscles", "teeth", "eyesight",
    "hearing", "dreams", "stress", "laughter", "emotions", "empathy", "curiosity", "creativity",
    "tides", "ocean currents", "clouds", "fog", "wind", "hurricanes", "tornadoes", "lightning",
    "seasons", "the sun", "eclipses", "comets", "the Milky Way", "planets", "stars",
    "fossils", "rocks and minerals", "soil", "rivers", "lakes", "mountains", "caves", "islands",
    "forests", "wetlands", "grasslands", "wolves", "whales", "octopuses", "ants", "butterflies",
    "spiders", "frogs", "owls", "penguins", "elephants", "sharks", "trees", "mushrooms", "seeds",
    "pollination", "food chains", "ecosystems", "pollution", "air quality", "clean water",
    "nuclear power", "hydropower", "fossil fuels", "energy saving", "insulation", "heat pumps",
    "bridges", "tunnels", "skyscrapers", "roads", "traffic", "public transport", "ships",
    "the post office", "banks", "taxes", "insurance", "loans", "prices", "supply and demand",
    "trade", "money", "small businesses", "advertising", "marketing", "customer service",
    "elections", "laws", "courts", "human rights", "the United Nations", "cities", "villages",
    "farming", "fishing", "tourism", "newspapers", "radio", "television", "films", "theatre",
    "dance", "sculpture", "architecture", "novels", "fairy tales", "myths", "languages",
    "writing systems", "mathematics", "fractions", "percentages", "statistics", "probability",
    "geometry", "algebra", "maps", "calendars", "clocks", "time zones", "the Olympic Games",
    "swimming", "tennis", "basketball", "yoga", "hiking", "camping", "cooking", "baking",
    "knitting", "woodworking", "board games", "puzzles", "volunteering", "parenting",
    "teenagers", "old age", "schools", "homework", "exams", "universities", "teachers",
    "doctors", "nurses", "hospitals", "firefighters", "pilots", "engineers", "scientists",
    "farmers", "the Renaissance", "ancient Egypt", "ancient Greece", "the Vikings", "castles",
    "the Silk Road", "explorers", "inventions", "the telephone", "the light bulb", "the wheel",
    "writing", "printing", "vaccination campaigns", "hand washing", "first aid",
)

SUBJECTS = (
    "a lighthouse keeper", "a lost robot", "a curious fox", "an old sailor", "a young inventor",
    "a dragon who cannot fly", "a city at night", "a rainy afternoon", "the first day of spring",
    "a small bakery", "a mountain village", "a friendly ghost", "a talking tree", "the sea",
    "a library after closing time", "a cat on a windowsill", "a train journey", "the stars",
)

NAMES = ("Ana", "Ben", "Chloe", "David", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jonas",
         "Kara", "Liam", "Mina", "Noah", "Olga", "Pablo", "Rosa", "Sami", "Tara", "Yusuf")
ITEMS = ("apples", "pencils", "cookies", "books", "marbles", "stickers", "oranges", "cards",
         "eggs", "flowers", "tickets", "bottles")
PLACES = ("Brenmoor", "Castell Ridge", "Dunhaven", "Elmsworth", "Farrow Bay", "Glenrock",
          "Holloway", "Ivybridge", "Juniper Falls", "Kestrel Point", "Larkfield", "Marrow Hill")
LANGUAGES = ("French", "Spanish", "German", "Italian", "Portuguese", "Dutch")
SENTENCES = (
    "The weather will be sunny tomorrow, so we can go to the beach.",
    "I would like to order a cup of coffee and a piece of cake, please.",
    "Could you tell me where the nearest train station is?",
    "My brother lives in a small house near the river.",
    "We are going to visit our grandparents next weekend.",
    "The children played in the park until it started to rain.",
    "Please close the window before you leave the office.",
    "This book is more interesting than the film.",
    "She has been learning to play the piano for three years.",
    "The shop opens at eight in the morning and closes at six.",
    "I forgot my umbrella at the restaurant yesterday.",
    "Thank you very much for your help with the project.",
)
FOREIGN = (
    "Je voudrais réserver une table pour deux personnes ce soir.",
    "El perro corre por el jardín todas las mañanas.",
    "Ich habe heute keine Zeit, aber morgen passt es mir gut.",
    "La biblioteca está cerrada los domingos.",
    "Nous avons visité le musée et ensuite nous avons mangé une glace.",
    "Der Zug nach Berlin fährt um zehn Uhr ab.",
)

# Translation sentences are built from parts, so the set does not run out of them
# (twelve fixed sentences used to give at most 90 distinct translation prompts).
_EN_WHO = ("My sister", "Our neighbour", "The teacher", "The new manager", "My friend from school",
           "The little boy", "The old man next door", "Our guide", "The doctor", "My grandmother",
           "The bus driver", "Everyone in my class")
_EN_DOES = ("cooks dinner for the whole family", "is looking for a cheaper flat", "reads the newspaper",
            "waits for the bus in the rain", "works in a big hospital", "plays the piano",
            "walks the dog in the park", "forgets where the keys are", "drinks tea with honey",
            "takes the train to the city", "writes long letters to old friends",
            "repairs bicycles in the garage", "buys fresh bread at the market", "speaks three languages",
            "goes swimming in the lake", "answers the phone very politely")
_EN_WHEN = ("every evening", "on Saturdays", "in the morning", "after work", "during the holidays",
            "when it is cold", "twice a week", "on rainy days")
_FOREIGN_PARTS = {  # (who, does, when) in French, Spanish and German, third person present
    "fr": (("Mon frère", "La voisine", "Le professeur", "Notre fille", "Mon grand-père"),
           ("prépare le dîner", "cherche un nouvel appartement", "lit le journal", "attend le bus",
            "travaille dans un hôpital", "joue du piano", "promène le chien", "achète du pain frais"),
           ("tous les soirs", "le samedi", "ce matin", "après le travail", "pendant les vacances")),
    "es": (("Mi hermano", "La vecina", "El profesor", "Nuestra hija", "Mi abuelo"),
           ("prepara la cena", "busca un piso nuevo", "lee el periódico", "espera el autobús",
            "trabaja en un hospital", "toca el piano", "pasea al perro", "compra pan fresco"),
           ("todas las noches", "los sábados", "esta mañana", "después del trabajo", "durante las vacaciones")),
    "de": (("Mein Bruder", "Die Nachbarin", "Der Lehrer", "Unsere Tochter", "Mein Großvater"),
           ("kocht das Abendessen", "sucht eine neue Wohnung", "liest die Zeitung", "wartet auf den Bus",
            "arbeitet in einem Krankenhaus", "spielt Klavier", "geht mit dem Hund spazieren",
            "kauft frisches Brot"),
           ("jeden Abend", "am Samstag", "heute Morgen", "nach der Arbeit", "in den Ferien")),
}


def _english_sentence(rng: random.Random) -> str:
    if rng.random() < 0.3:
        return rng.choice(SENTENCES)
    return f"{rng.choice(_EN_WHO)} {rng.choice(_EN_DOES)} {rng.choice(_EN_WHEN)}."


def _foreign_sentence(rng: random.Random) -> str:
    if rng.random() < 0.2:
        return rng.choice(FOREIGN)
    who, does, when = _FOREIGN_PARTS[rng.choice(tuple(_FOREIGN_PARTS))]
    return f"{rng.choice(who)} {rng.choice(does)} {rng.choice(when)}."


_SIMPLE = (
    "Explain {t} in simple terms.", "What is {t}?", "Tell me three interesting facts about {t}.",
    "Why is {t} important?", "How does {t} work?", "Write a short paragraph about {t}.",
    "Give me five tips related to {t}.", "What are the pros and cons of {t}?",
    "Explain {t} to a ten-year-old.", "What are common misconceptions about {t}?",
    "Summarize the history of {t} in a few sentences.", "List the key ideas behind {t}.",
    "How can I learn more about {t}?", "Write a haiku about {t}.",
    "What questions do people often ask about {t}? Answer two of them.",
    "Compare {t} and {u}.", "What is the connection between {t} and {u}?",
    "Write a short blog post introduction about {t}.", "Describe {t} in one paragraph.",
)
_MORE_SIMPLE = (
    "What is the difference between {t} and {u}?", "What causes problems with {t}?",
    "What would happen without {t}?", "How has {t} changed over the last hundred years?",
    "Who uses {t}, and why?", "What should a beginner know about {t}?",
    "Answer briefly: what is {t} used for?", "Is {t} good or bad for the environment? Explain.",
    "Explain {t} with an everyday example.", "What are the main parts of {t}?",
    "Why do some people find {t} hard to understand?", "Give a short definition of {t}.",
    "What is one surprising thing about {t}?", "How is {t} measured or studied?",
    "Write a short quiz with three questions about {t}, and give the answers.",
)
_CREATIVE = (
    "Write a short poem about {s}.", "Write a very short story about {s}.",
    "Describe {s} using vivid details.", "Write a limerick about {s}.",
    "Write the opening paragraph of a novel about {s}.",
    "Write a short dialogue between two friends about {s}.",
)
_CODE = (
    "Write a Python function that {c}.", "Show me Python code that {c}, with an example.",
    "Explain step by step how to write code that {c}.",
)
_CODE_TASKS = (
    "reverses a string", "checks whether a number is prime", "counts the words in a sentence",
    "finds the largest number in a list", "removes duplicates from a list",
    "computes the factorial of a number", "reads a text file line by line",
    "sorts a list of dictionaries by a key", "checks whether a word is a palindrome",
    "converts Celsius to Fahrenheit", "returns the Fibonacci numbers up to n",
    "merges two sorted lists", "counts how often each letter appears in a string",
)
_MORE_CODE_TASKS = (
    "checks whether a year is a leap year", "computes the average of a list of numbers",
    "finds the second largest number in a list", "turns a sentence into title case",
    "counts the vowels in a word", "prints a multiplication table", "checks whether two words are anagrams",
    "splits a list into chunks of equal size", "finds the common elements of two lists",
    "converts a number of seconds into hours and minutes", "validates a simple email address",
    "writes a list of names to a CSV file",
)
_ADVICE = (
    "I feel tired every afternoon. What can I do?", "How can I stay focused while studying?",
    "What should I pack for a weekend camping trip?", "How do I make new friends in a new city?",
    "Give me ideas for a birthday party for a seven-year-old.",
    "How can I save money on groceries?", "What are good ways to relax after work?",
    "How do I start learning to draw?", "Suggest a weekly workout plan for a beginner.",
    "How can I improve my handwriting?", "What is a good morning routine?",
    "How should I prepare for my first marathon?", "Suggest five healthy breakfast ideas.",
    "How do I write a polite email asking for a deadline extension?",
    "Plan a three-day trip to a city by the sea.", "How do I take care of a new puppy?",
)


def _passage(rng: random.Random) -> tuple[str, str]:
    """A short made-up passage with facts in it, and a question it answers."""
    place, name = rng.choice(PLACES), rng.choice(NAMES)
    year, n, price = rng.randint(1820, 1990), rng.randint(3, 40), rng.randint(2, 30)
    kind = rng.randrange(3)
    if kind == 0:
        text = (f"The town of {place} was founded in {year} by fishermen. Its harbour was "
                f"rebuilt after a storm in {year + rng.randint(10, 30)}, and today it hosts "
                f"{n} fishing boats. The town museum, run by {name}, is open from Tuesday to "
                f"Sunday and costs {price} dollars for adults. Every summer the town holds "
                f"a music festival that draws visitors from across the region.")
        q = "When was the town founded, and what does the museum cost?"
    elif kind == 1:
        text = (f"{name} opened a small bakery in {place} in {year}. At first it sold only "
                f"bread, but soon it added {n} kinds of pastries. The bakery opens at 6 am "
                f"and closes when the bread runs out, usually around 2 pm. A loaf costs "
                f"{price} dollars, and on Fridays every customer gets a free cookie.")
        q = "What time does the bakery open, and what happens on Fridays?"
    else:
        text = (f"The {place} hiking club has {n * 10} members and meets every Saturday at "
                f"8 am by the old bridge. Walks are between 8 and 20 km long. New members "
                f"pay {price} dollars a year and can join two walks for free first. The club "
                f"was started in {year} by {name}, who still leads the longest walks.")
        q = "How much does membership cost, and where does the club meet?"
    return text, q


def _math(rng: random.Random) -> str:
    a, b, c = rng.randint(2, 12), rng.randint(2, 12), rng.randint(2, 50)
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    forms = (
        f"{name} has {a * b} {item} and shares them equally among {b} friends. How many does "
        f"each friend get? Explain your answer.",
        f"{name} buys {a} packs of {item}. Each pack has {b} {item} and costs {c} dollars. How "
        f"many {item} does {name} have, and how much did they cost? Think step by step.",
        f"A car travels at {a * 10} km per hour for {b} hours. How far does it go? Show your work.",
        f"What is {a * c} plus {b * c}, divided by {c}? Solve it step by step.",
        f"A rectangle is {a} meters long and {b} meters wide. What are its area and perimeter?",
        f"{name} is {a} years older than her brother. Together they are {2 * c + a} years old. "
        f"How old is each of them? Solve it step by step.",
        f"A jacket costs {c * 4} dollars and is on sale for {a * 5} percent off. What is the sale "
        f"price? Explain each step.",
    )
    return rng.choice(forms)


PROMPT_SETS = ("templated", "wide")


def make_prompts(count: int, seed: int = 0, prompt_set: str = "templated") -> list[str]:
    """`count` distinct user prompts, the same for the same (count, seed, set).

    "templated" is the set the shipped drafter was trained on; "wide" adds the
    _MORE_* lists and builds translation sentences from parts, so it does not run out
    of translation and code prompts (the templated set has 90 and 39 distinct ones,
    so past ~2,000 prompts it holds only the other kinds)."""
    if prompt_set not in PROMPT_SETS:
        raise ValueError(f"unknown prompt set {prompt_set!r} (choose from {', '.join(PROMPT_SETS)})")
    wide = prompt_set == "wide"
    rng = random.Random(seed)
    seen: set[str] = set()
    out: list[str] = []
    topics = TOPICS + _MORE_TOPICS if wide else TOPICS
    simple = _SIMPLE + _MORE_SIMPLE if wide else _SIMPLE
    code_tasks = _CODE_TASKS + _MORE_CODE_TASKS if wide else _CODE_TASKS
    english = (lambda: _english_sentence(rng)) if wide else (lambda: rng.choice(SENTENCES))
    foreign = (lambda: _foreign_sentence(rng)) if wide else (lambda: rng.choice(FOREIGN))
    makers = (
        (30, lambda: rng.choice(simple).format(t=rng.choice(topics), u=rng.choice(topics))),
        (10, lambda: rng.choice(_CREATIVE).format(s=rng.choice(SUBJECTS + topics))),
        (8, lambda: rng.choice(_CODE).format(c=rng.choice(code_tasks))),
        (6, lambda: rng.choice(_ADVICE)),
        (10, lambda: _math(rng)),
        (8, lambda: f"Translate into {rng.choice(LANGUAGES)}: {english()}"),
        (3, lambda: f"Translate into English: {foreign()}"),
        (8, lambda: _summarize(rng)),
        (8, lambda: _from_document(rng)),
    )
    weights = [w for w, _ in makers]
    tries = 0
    while len(out) < count and tries < count * 50:
        tries += 1
        prompt = rng.choices(makers, weights)[0][1]()
        if prompt not in seen:
            seen.add(prompt)
            out.append(prompt)
    return out


def _summarize(rng: random.Random) -> str:
    text, _ = _passage(rng)
    ask = rng.choice(("Summarize the following text in two sentences.",
                      "Summarize this as a bullet list.", "Give a one-sentence summary of this text.",
                      "What are the main points of this text?"))
    return f"{ask}\n\n{text}"


def _from_document(rng: random.Random) -> str:
    text, q = _passage(rng)
    return f"Answer the question using only the text below.\n\n{text}\n\nQuestion: {q}"
