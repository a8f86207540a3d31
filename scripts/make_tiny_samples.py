"""Regenerate src/nextai/data/samples/alpaca_tiny.jsonl: small Alpaca records written for nextai.

The tasks are simple and regular (arithmetic, word games, short facts written here) so that a tiny
random-weight model visibly learns them in minutes on a CPU. No text is copied from any dataset.
Usage: python scripts/make_tiny_samples.py
"""

import json
import random
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "src/nextai/data/samples/alpaca_tiny.jsonl"
WORDS = ["garden", "river", "planet", "window", "castle", "pencil", "silver", "forest", "bridge", "candle",
         "market", "rocket", "meadow", "spider", "violin", "harbor", "lantern", "thunder", "marble", "pepper"]
OPPOSITES = [("hot", "cold"), ("tall", "short"), ("early", "late"), ("open", "closed"), ("light", "heavy"),
             ("fast", "slow"), ("empty", "full"), ("happy", "sad"), ("inside", "outside"), ("loud", "quiet")]
FACTS = [
    ("Name a primary color.", "Red is a primary color."),
    ("What do plants need to grow?", "Plants need light, water, air and nutrients from the soil."),
    ("How many days are in a week?", "A week has seven days."),
    ("What is the freezing point of water in Celsius?", "Water freezes at 0 degrees Celsius."),
    ("Give a synonym for big.", "A synonym for big is large."),
    ("What is the opposite of north?", "The opposite of north is south."),
    ("How many legs does a spider have?", "A spider has eight legs."),
    ("Suggest a name for a pet goldfish.", "You could call the goldfish Bubbles."),
    ("Write a short greeting for a colleague.", "Good morning! I hope your day is going well."),
    ("Explain what a noun is.", "A noun is a word that names a person, place, thing or idea."),
    ("Which is heavier, a kilogram of iron or a kilogram of feathers?", "They weigh the same: one kilogram each."),
    ("What shape has three sides?", "A triangle has three sides."),
]


def records(rng: random.Random) -> list[dict]:
    out = []
    for _ in range(70):
        a, b = rng.randint(1, 60), rng.randint(1, 60)
        out.append({"instruction": "Add the two numbers.", "input": f"{a} and {b}", "output": f"{a} + {b} = {a + b}."})
    for _ in range(50):
        word = rng.choice(WORDS)
        out.append({"instruction": "Reverse the letters of the word.", "input": word, "output": word[::-1]})
    for _ in range(50):
        nums = rng.sample(range(1, 40), rng.randint(3, 6))
        out.append({"instruction": "Sort the numbers from smallest to largest.", "input": ", ".join(map(str, nums)),
                    "output": ", ".join(map(str, sorted(nums)))})
    for _ in range(40):
        n = rng.randint(1, 99)
        out.append({"instruction": f"Is {n} even or odd?", "input": "",
                    "output": f"{n} is {'even' if n % 2 == 0 else 'odd'}."})
    for _ in range(40):
        words = rng.sample(WORDS, rng.randint(2, 5))
        out.append({"instruction": "Write the words in capital letters.", "input": " ".join(words),
                    "output": " ".join(words).upper()})
    for word, opposite in OPPOSITES * 3:
        out.append({"instruction": f"What is the opposite of {word}?", "input": "",
                    "output": f"The opposite of {word} is {opposite}."})
    for instruction, answer in FACTS * 2:
        out.append({"instruction": instruction, "input": "", "output": answer})
    rng.shuffle(out)
    return out


def main() -> None:
    rows = records(random.Random(2023))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    print(f"wrote {len(rows)} records to {OUT}")


if __name__ == "__main__":
    main()
