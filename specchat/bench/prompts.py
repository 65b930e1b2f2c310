"""Benchmark prompts: the built-in set, and JSON-lines files of the user's own.

The built-in set follows Spec-Bench's six task kinds (multi-turn conversation,
translation, summarization, question answering, math reasoning, retrieval-augmented
answering), with prompts written for specchat. Summarization and retrieval prompts
carry their source text, since copying from the input is what n-gram drafters and
small draft models find easiest; the other kinds show where they struggle.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class BenchPrompt:
    category: str
    turns: tuple[str, ...]  # one user message per turn; more than one = multi-turn
    id: str = ""


class PromptFileError(ValueError):
    """A prompts file that cannot be used; the message names the line."""


_LIGHTHOUSE = (
    "The lighthouse on Karrow Point was built in 1871 from granite quarried on the island "
    "itself. Its first lamp burned whale oil and could be seen for eleven nautical miles. "
    "In 1903 the keepers switched to kerosene, and in 1952 the light was electrified, "
    "which let the coast guard reduce the staff from three keepers to one. The last "
    "keeper, Agnes Moll, left in 1987 when the light became fully automatic. Today the "
    "tower is a museum run by volunteers, open from May to September."
)
_TRAINS = (
    "Night trains are returning to Europe. After a decade in which operators cut most "
    "sleeper routes as unprofitable, new services now link Vienna, Berlin, Brussels and "
    "Paris. Travellers cite lower emissions and the chance to arrive rested in a city "
    "centre. Operators still face obstacles: track access fees differ from country to "
    "country, rolling stock is old, and cabins must be priced against low-cost flights. "
    "Several governments have started to subsidise routes, arguing that the climate "
    "benefit justifies the cost."
)
_BEES = (
    "A three-year study of urban beekeeping in twelve cities found that honey bee hives "
    "in dense neighbourhoods produced on average 20 percent more honey than rural hives, "
    "probably because gardens and street trees flower over a longer season. However, the "
    "study also found that wild bee species declined where hive density was highest, "
    "suggesting competition for pollen. The authors recommend that cities cap the number "
    "of hives per square kilometre and plant more native flowers."
)
_SOUP = (
    "Minutes of the Elm Street Community Garden meeting, 4 March. Present: eight members. "
    "The group agreed to buy two new rain barrels, with a budget of 120 dollars. Priya "
    "will ask the hardware store for a discount. The spring planting day is moved from "
    "12 April to 19 April because of the city marathon. Tom reported that the compost bin "
    "is full and proposed a second one; a decision was postponed to the next meeting. "
    "The meeting closed at 8:40 pm."
)

_DOC_LIBRARY = (
    "Document 1: The Westbrook Public Library is open Monday to Friday from 9 am to 8 pm "
    "and on Saturday from 10 am to 4 pm. It is closed on Sundays and public holidays.\n"
    "Document 2: Library members may borrow up to 12 items at a time. Books are lent for "
    "three weeks and films for one week. Each loan can be renewed twice online.\n"
    "Document 3: Late returns cost 20 cents per item per day, up to a maximum of 5 dollars "
    "per item. Children's books have no late fees."
)
_DOC_PRODUCT = (
    "Document 1: The Aero 3 kettle holds 1.7 litres and boils a full load in about four "
    "minutes. It switches off automatically when the water boils or if it is switched on "
    "empty.\n"
    "Document 2: The kettle's base has a 75 cm cable and can be used with the kettle "
    "facing any direction. The limescale filter is removable and can go in the dishwasher.\n"
    "Document 3: The Aero 3 carries a two-year warranty. To claim it, customers need the "
    "receipt and the serial number printed under the base."
)
_DOC_TRIP = (
    "Document 1: The ferry to Lund Island leaves the harbour at 7:30, 11:00 and 16:00 "
    "every day. The crossing takes 50 minutes.\n"
    "Document 2: Tickets cost 14 euros for adults and 7 euros for children under 12. "
    "Bicycles travel for 4 euros. Cars are not allowed on the island.\n"
    "Document 3: On the island, the lighthouse trail is a 6 km loop that starts at the "
    "ferry pier. The island cafe is open from 10:00 to 17:00."
)
_DOC_POLICY = (
    "Document 1: Employees may work from home up to three days a week, agreed with their "
    "manager in advance.\n"
    "Document 2: The company pays up to 300 dollars once for home office equipment. "
    "Receipts must be submitted within 30 days of purchase.\n"
    "Document 3: Meetings with more than five people must offer a video link so that "
    "remote staff can join."
)


def _rag(documents: str, question: str) -> str:
    return f"Answer the question using only the documents below.\n\n{documents}\n\nQuestion: {question}"


BUILTIN: tuple[BenchPrompt, ...] = (
    # multi-turn conversation: later turns build on the earlier answer
    BenchPrompt("multi_turn", (
        "I want to start running. Suggest a plan for my first two weeks.",
        "Now make it suitable for someone who can only run in the early morning, before work.",
    ), "mt-running"),
    BenchPrompt("multi_turn", (
        "Write a short poem about autumn leaves.",
        "Rewrite the poem so that every line starts with the letter S.",
    ), "mt-poem"),
    BenchPrompt("multi_turn", (
        "What are three good habits for keeping a tidy desk?",
        "Explain the second habit in more detail and give an example.",
    ), "mt-desk"),
    BenchPrompt("multi_turn", (
        "Give me a simple recipe for tomato soup.",
        "How can I change the recipe to make it vegan and a bit spicier?",
    ), "mt-soup"),
    # translation
    BenchPrompt("translation", (
        "Translate into French: The museum opens at nine o'clock, but the garden is open all day.",
    ), "tr-fr"),
    BenchPrompt("translation", (
        "Translate into Spanish: Please remember to water the plants while I am away next week.",
    ), "tr-es"),
    BenchPrompt("translation", (
        "Translate into German: The train was late, so we had coffee at the station and talked for an hour.",
    ), "tr-de"),
    BenchPrompt("translation", (
        "Translate into English: Le chat dort sur le canapé depuis ce matin et refuse de bouger.",
    ), "tr-en"),
    # summarization
    BenchPrompt("summarization", (f"Summarize the following text in three sentences.\n\n{_LIGHTHOUSE}",), "sum-lighthouse"),
    BenchPrompt("summarization", (f"Summarize the following article in a few sentences.\n\n{_TRAINS}",), "sum-trains"),
    BenchPrompt("summarization", (f"Summarize the main findings of this study.\n\n{_BEES}",), "sum-bees"),
    BenchPrompt("summarization", (f"Summarize these meeting minutes as a bullet list.\n\n{_SOUP}",), "sum-minutes"),
    # question answering
    BenchPrompt("qa", ("Why is the sky blue? Explain it simply.",), "qa-sky"),
    BenchPrompt("qa", ("What is the difference between weather and climate?",), "qa-climate"),
    BenchPrompt("qa", ("How does a refrigerator keep food cold?",), "qa-fridge"),
    BenchPrompt("qa", ("What are the main causes of inflation?",), "qa-inflation"),
    # math reasoning: step by step, as Spec-Bench's GSM8K-style items
    BenchPrompt("math", (
        "A baker makes 24 muffins and sells them in boxes of 4. Each box costs 6 dollars. "
        "How much money does she make if she sells all the muffins? Think step by step.",
    ), "math-muffins"),
    BenchPrompt("math", (
        "Tom is 3 times as old as his sister. In 5 years, he will be twice as old as her. "
        "How old is his sister now? Solve it step by step.",
    ), "math-ages"),
    BenchPrompt("math", (
        "A train travels 180 km in 2 hours and then 120 km in 1.5 hours. What is its average "
        "speed for the whole trip? Show your reasoning.",
    ), "math-train"),
    BenchPrompt("math", (
        "A shirt costs 40 dollars. It is discounted by 25 percent, and then a 10 percent tax is "
        "added to the discounted price. What is the final price? Explain each step.",
    ), "math-shirt"),
    # retrieval-augmented answering: documents in the prompt, answer from them
    BenchPrompt("rag", (_rag(_DOC_LIBRARY, "How long can I keep a film, and what happens if I return it late?"),), "rag-library"),
    BenchPrompt("rag", (_rag(_DOC_PRODUCT, "What do I need to claim the warranty, and how long does it last?"),), "rag-kettle"),
    BenchPrompt("rag", (_rag(_DOC_TRIP, "What does a day trip cost for two adults with bicycles, and when can they leave?"),), "rag-ferry"),
    BenchPrompt("rag", (_rag(_DOC_POLICY, "Can I work from home on Mondays and Fridays, and will the company pay for a desk?"),), "rag-policy"),
)


def builtin_prompts() -> list[BenchPrompt]:
    return list(BUILTIN)


def load_prompts(path: Path) -> list[BenchPrompt]:
    """JSON lines: {"category": ..., "prompt": "..."} or {"category": ..., "turns": [...]}."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise PromptFileError(f"cannot read prompts file {path}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise PromptFileError(f"prompts file {path} is not UTF-8 text") from None
    prompts = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            item = json.loads(line)
        except json.JSONDecodeError as e:
            raise PromptFileError(f"{where}: not JSON ({e.msg})") from None
        prompts.append(_prompt_from(item, where, f"{path.stem}-{n}"))
    if not prompts:
        raise PromptFileError(f"prompts file {path} holds no prompts")
    return prompts


def _prompt_from(item: object, where: str, default_id: str) -> BenchPrompt:
    if not isinstance(item, dict):
        raise PromptFileError(f"{where}: expected a JSON object")
    category = item.get("category")
    if not isinstance(category, str) or not category.strip():
        raise PromptFileError(f"{where}: needs a \"category\" string")
    if ("prompt" in item) == ("turns" in item):
        raise PromptFileError(f"{where}: needs exactly one of \"prompt\" or \"turns\"")
    turns = [item["prompt"]] if "prompt" in item else item["turns"]
    if not isinstance(turns, list) or not turns or not all(isinstance(t, str) and t.strip() for t in turns):
        raise PromptFileError(f"{where}: \"prompt\" must be a non-empty string, \"turns\" a list of them")
    ident = item.get("id", default_id)
    return BenchPrompt(category.strip(), tuple(turns), str(ident))


def select(prompts: list[BenchPrompt], *, categories: list[str] | None = None,
           limit: int | None = None) -> list[BenchPrompt]:
    """The prompts of the given categories (all when None), at most `limit` per category."""
    chosen, per_category = [], {}
    for p in prompts:
        if categories and p.category not in categories:
            continue
        if limit is not None and per_category.get(p.category, 0) >= limit:
            continue
        per_category[p.category] = per_category.get(p.category, 0) + 1
        chosen.append(p)
    return chosen
