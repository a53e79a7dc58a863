"""Write the builtin general-skills probe (`builtin:general-probe`); seeded, so re-running reproduces it.

    python scripts/make_probe_data.py

The probe measures what adapting a model may break (catastrophic forgetting), so it asks for
things a small instruct model can do before any training and that no attune task trains:

- probe-knowledge: 40 general-knowledge questions, 4 options each, scored by log-likelihood
  (`choice`, like lm-evaluation-harness). Facts are textbook ones that do not change with time.
- probe-arithmetic: 30 one-step sums, differences and products of small numbers (`generate`).
- probe-instructions: 20 requests with verifiable form constraints, checked by the
  `follows_instructions` metric (IFEval's idea, Zhou et al. 2023: only checks a program can verify).
- probe-text: 12 hand-written encyclopedic paragraphs for general-text perplexity.

Everything here is small on purpose: the probe runs on the base model and on every candidate.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "src/attune/builtin/probes/data"

# (question, right answer, three wrong answers)
KNOWLEDGE = [
    ("What is the capital of France?", "Paris", ["London", "Berlin", "Madrid"]),
    ("How many days are there in a week?", "Seven", ["Five", "Ten", "Twelve"]),
    ("Which planet is known as the Red Planet?", "Mars", ["Venus", "Jupiter", "Saturn"]),
    ("What is the largest ocean on Earth?", "The Pacific Ocean", ["The Atlantic Ocean", "The Indian Ocean", "The Arctic Ocean"]),
    ("Which gas do plants take in from the air to make their food?", "Carbon dioxide", ["Helium", "Neon", "Hydrogen"]),
    ("At what temperature in degrees Celsius does pure water freeze?", "0 degrees", ["100 degrees", "50 degrees", "37 degrees"]),
    ("Who wrote the play Romeo and Juliet?", "William Shakespeare", ["Charles Dickens", "Jane Austen", "Mark Twain"]),
    ("What is the chemical symbol for gold?", "Au", ["Ag", "Fe", "Pb"]),
    ("Which is the largest animal that has ever lived?", "The blue whale", ["The African elephant", "The giraffe", "The hippopotamus"]),
    ("At what temperature in degrees Celsius does water boil at sea level?", "100 degrees", ["0 degrees", "50 degrees", "212 degrees"]),
    ("Which language is mainly spoken in Brazil?", "Portuguese", ["Spanish", "French", "Italian"]),
    ("What is the capital of Japan?", "Tokyo", ["Beijing", "Seoul", "Bangkok"]),
    ("Which organ pumps blood through the human body?", "The heart", ["The liver", "The lungs", "The stomach"]),
    ("What is the highest mountain above sea level?", "Mount Everest", ["Mont Blanc", "Mount Kilimanjaro", "Mount Fuji"]),
    ("What do honey bees make from the nectar of flowers?", "Honey", ["Milk", "Silk", "Cotton"]),
    ("Which musical instrument usually has 88 keys?", "The piano", ["The guitar", "The violin", "The trumpet"]),
    ("How many legs does a spider have?", "Eight", ["Six", "Four", "Ten"]),
    ("Which star is closest to the Earth?", "The Sun", ["Sirius", "Polaris", "Betelgeuse"]),
    ("Which metal is liquid at room temperature?", "Mercury", ["Iron", "Copper", "Aluminium"]),
    ("Who painted the Mona Lisa?", "Leonardo da Vinci", ["Vincent van Gogh", "Pablo Picasso", "Claude Monet"]),
    ("What is the common name for H2O?", "Water", ["Salt", "Sugar", "Chalk"]),
    ("What is the largest planet in the Solar System?", "Jupiter", ["Mars", "Earth", "Mercury"]),
    ("On which continent is Egypt?", "Africa", ["Europe", "South America", "Australia"]),
    ("How many hours are there in a day?", "24", ["12", "36", "48"]),
    ("What is the capital of Italy?", "Rome", ["Milan", "Venice", "Naples"]),
    ("Which colour do you get by mixing blue and yellow paint?", "Green", ["Purple", "Orange", "Red"]),
    ("Which sense do we use our ears for?", "Hearing", ["Sight", "Taste", "Smell"]),
    ("What does a caterpillar turn into?", "A butterfly or a moth", ["A frog", "A bird", "A spider"]),
    ("Which is the longest river in Africa?", "The Nile", ["The Congo", "The Niger", "The Zambezi"]),
    ("What is the currency of the United Kingdom?", "The pound sterling", ["The euro", "The yen", "The rupee"]),
    ("Which part of a plant takes up water from the soil?", "The roots", ["The flowers", "The seeds", "The fruit"]),
    ("How many minutes are there in an hour?", "Sixty", ["Thirty", "One hundred", "Twenty-four"]),
    ("Which gas do humans need to breathe in to stay alive?", "Oxygen", ["Carbon dioxide", "Helium", "Neon"]),
    ("Who was the first person to walk on the Moon?", "Neil Armstrong", ["Yuri Gagarin", "John Glenn", "Alan Shepard"]),
    ("What is the capital of Canada?", "Ottawa", ["Toronto", "Vancouver", "Montreal"]),
    ("How many sides does a triangle have?", "Three", ["Four", "Five", "Six"]),
    ("What is frozen water called?", "Ice", ["Steam", "Sand", "Glass"]),
    ("Which animal is known as the king of the jungle?", "The lion", ["The mouse", "The rabbit", "The sheep"]),
    ("In which country are the ancient pyramids of Giza?", "Egypt", ["Mexico", "Peru", "Greece"]),
    ("How many months are there in a year?", "Twelve", ["Ten", "Eleven", "Fourteen"]),
]

# (request, verifiable constraints); the `follows_instructions` metric documents each check.
INSTRUCTIONS = [
    ("Reply with only the word yes or the word no: is the Sun hot?", {"one_of": ["yes", "no"]}),
    ("Write one sentence about the sea, using only lowercase letters.", {"lowercase": True, "min_words": 3}),
    ("Name three fruits as a JSON list of strings. Output only the JSON.", {"json_list_length": 3}),
    ("Answer in at most five words: what colour is the sky on a clear day?", {"max_words": 5}),
    ("Start your reply with the word 'Sure'. Then describe a cat in one sentence.", {"starts_with": "Sure"}),
    ("Describe a sunny day in one sentence and end your reply with the exact words 'Thank you.'", {"ends_with": "Thank you."}),
    ("List three colours, one per line, with no other text.", {"lines": 3}),
    ("Describe a dog in one sentence without using the word 'dog'.", {"excludes": ["dog"], "min_words": 3}),
    ("Repeat this sentence exactly and say nothing else: The quick brown fox jumps over the lazy dog.",
     {"equals": "The quick brown fox jumps over the lazy dog."}),
    ("Write one sentence that uses both the words 'river' and 'bridge'.", {"contains": ["river", "bridge"]}),
    ("Answer in capital letters only: what is the capital of Spain?", {"uppercase": True}),
    ("Answer with more than twenty words: why do people need sleep?", {"min_words": 21}),
    ("Reply with a JSON object that has a key 'name' set to any first name. Output only the JSON.", {"json_keys": ["name"]}),
    ("Write the numbers from 1 to 5 separated by commas.", {"matches": r"1,\s*2,\s*3,\s*4,\s*5"}),
    ("Describe your favourite food without using any commas.", {"excludes": [","], "min_words": 3}),
    ("Give a title for a story about a lost cat, wrapped in double angular brackets like <<title>>.", {"matches": r"<<[^<>]+>>"}),
    ("Reply with the single word OK and nothing else.", {"equals": "OK"}),
    ("Ask me a question about the weather. Your reply must end with a question mark.", {"ends_with": "?"}),
    ("Give two tips for staying healthy as a bulleted list: each line starts with '- '.", {"bullets": 2}),
    ("Reply with a single number and nothing else: how many wheels does a bicycle have?", {"matches": r"^\s*\d+\s*\.?\s*$"}),
]

TEXT = [
    "The water cycle describes how water moves between the oceans, the air and the land. Heat from the Sun "
    "evaporates water from seas, lakes and rivers, and plants release water vapour through their leaves. As the "
    "warm, moist air rises it cools, and the vapour condenses into tiny droplets that form clouds. When the "
    "droplets grow heavy enough they fall as rain, snow or hail. Some of that water flows over the ground into "
    "rivers and back to the sea, and some soaks into the soil, where it may be stored for a long time as groundwater.",
    "Photosynthesis is the process by which green plants, algae and some bacteria make their own food. Using the "
    "energy of sunlight, captured by the green pigment chlorophyll, they combine carbon dioxide from the air with "
    "water to make sugars, and they release oxygen as a by-product. Almost all life on Earth depends on this "
    "process, directly or indirectly: animals eat plants or eat other animals that eat plants, and the oxygen in "
    "the air we breathe was produced by photosynthesis over hundreds of millions of years.",
    "Johannes Gutenberg, a goldsmith from the German city of Mainz, developed a printing press with movable metal "
    "type around the year 1450. Before then, most books in Europe were copied by hand, which was slow and "
    "expensive. Printing made books far cheaper and more common, helped ideas travel quickly across the continent "
    "and encouraged more people to learn to read. The Gutenberg Bible, printed in the 1450s, is one of the "
    "earliest major books printed this way in Europe.",
    "The human heart is a muscular organ about the size of a fist. It has four chambers: two upper chambers called "
    "atria and two lower chambers called ventricles. The right side of the heart pumps blood to the lungs, where "
    "it picks up oxygen and gets rid of carbon dioxide. The left side pumps the oxygen-rich blood through the "
    "arteries to the rest of the body. Valves between the chambers keep the blood flowing in one direction, and "
    "an adult heart at rest beats roughly sixty to one hundred times a minute.",
    "A library is a collection of books and other materials that people can read or borrow. Public libraries are "
    "usually free to use and are paid for by local or national governments. Besides printed books, many libraries "
    "lend newspapers, music, films and electronic books, and offer computers, study spaces and reading groups for "
    "children. Librarians help visitors find information and organise the collection so that every item can be "
    "located, often with a classification system that gives each subject its own number.",
    "The Moon is the Earth's only natural satellite. It orbits the Earth about once every twenty-seven days and "
    "always shows roughly the same face to us, because it turns on its axis once in the same time that it takes "
    "to go around the planet. The Moon has no light of its own; it shines by reflecting sunlight, and the changing "
    "angle between the Sun, the Earth and the Moon produces its phases, from new moon to full moon and back again. "
    "Its gravity is the main cause of the tides in the oceans.",
    "Bread is one of the oldest prepared foods. A basic loaf needs only flour, water, salt and yeast. When the "
    "dough is kneaded, proteins in the flour form gluten, a stretchy network that traps gas. The yeast feeds on "
    "sugars in the dough and produces carbon dioxide, which makes the dough rise. Baking in a hot oven sets the "
    "structure, turns some of the water into steam and browns the crust. Flat breads made without yeast are "
    "eaten in many parts of the world.",
    "Volcanoes are openings in the Earth's crust through which molten rock, ash and gases escape. The molten rock "
    "is called magma while it is underground and lava once it reaches the surface. Many volcanoes lie along the "
    "edges of the large plates that make up the Earth's outer shell, for example around the Pacific Ocean. An "
    "eruption can be gentle, with rivers of lava, or explosive, throwing ash high into the sky. Over time, the "
    "soil around volcanoes often becomes very fertile.",
    "Bicycles are a simple and efficient way to travel. A rider pushes the pedals, which turn a chain that drives "
    "the rear wheel. Gears let the rider choose between climbing hills slowly with little effort and riding fast "
    "on flat roads. Because bicycles need no fuel and produce no exhaust, many cities build separate lanes for "
    "them to make cycling safer. Regular cycling is also good exercise for the heart and the legs.",
    "Honey bees live in colonies that can contain tens of thousands of insects. Each colony has one queen, who "
    "lays the eggs, a smaller number of male bees called drones, and many female worker bees. Workers collect "
    "nectar and pollen from flowers, build the wax comb, care for the young and guard the hive. While they visit "
    "flowers, bees carry pollen from one plant to another, which helps many fruits and vegetables grow. Nectar "
    "stored in the comb slowly turns into honey.",
    "Money makes trade easier than swapping goods directly. Without it, a farmer who wanted shoes would have to "
    "find a shoemaker who happened to want grain. Over history people have used shells, salt, metal coins and "
    "paper notes as money, and today much of it exists only as numbers in bank accounts. To work well, money has "
    "to be widely accepted, easy to carry, hard to forge and able to keep its value over time. Central banks in "
    "many countries try to keep prices stable.",
    "Maps are drawings of a place seen from above. Because the Earth is round and a sheet of paper is flat, every "
    "world map has to stretch or squeeze some areas, so different map projections are used for different "
    "purposes. A map usually has a scale, which tells how distances on the paper relate to real distances, and a "
    "legend that explains its symbols. Lines of latitude run east and west around the globe, and lines of "
    "longitude run from the North Pole to the South Pole.",
]


def arithmetic(rng: random.Random, n: int = 30) -> list[dict]:
    """Ten each of sums and differences of numbers up to 20, and products of one-digit numbers."""
    rows = []
    for i in range(n):
        kind = i % 3
        if kind == 0:
            a, b = rng.randint(2, 20), rng.randint(2, 20)
            q, ans = f"{a} + {b}", a + b
        elif kind == 1:
            a = rng.randint(5, 20)
            b = rng.randint(1, a - 1)
            q, ans = f"{a} - {b}", a - b
        else:
            a, b = rng.randint(2, 9), rng.randint(2, 9)
            q, ans = f"{a} x {b}", a * b
        rows.append({"question": f"What is {q}? Reply with the number only.", "answer": str(ans)})
    return rows


def write_jsonl(name: str, rows: list[dict]) -> None:
    (OUT / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(f"{OUT / name}: {len(rows)} rows")


def main() -> None:
    rng = random.Random(4)
    knowledge = []
    for question, right, wrong in KNOWLEDGE:
        options = [right, *wrong]
        rng.shuffle(options)
        knowledge.append({"question": question, "choices": options, "label": options.index(right)})
    write_jsonl("probe-knowledge.jsonl", knowledge)
    write_jsonl("probe-arithmetic.jsonl", arithmetic(rng))
    write_jsonl("probe-instructions.jsonl", [{"instruction": q, "checks": json.dumps(c)} for q, c in INSTRUCTIONS])
    write_jsonl("probe-text.jsonl", [{"text": t} for t in TEXT])


if __name__ == "__main__":
    main()
