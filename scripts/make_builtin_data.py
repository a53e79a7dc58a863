"""Write the builtin support datasets (seeded, so re-running reproduces the shipped files).

    python scripts/make_builtin_data.py

tickets-*.jsonl: support-ticket triage for "Northwind Home" (a fictional smart-home company).
The reply is strict JSON {"category": ..., "priority": ...}. Priority follows cues a model can
learn: high = outage, locked out, double charge, safety or a hard deadline; low = a question,
feedback or feature request; medium = everything else. Train and held-out tickets use disjoint
phrasings (templates split by index), so the held-out score measures generalisation.

support-prefs*.jsonl: preference pairs. The chosen reply follows the house style (starts with
"Thanks for reaching out", under 60 words, gives a next step); the rejected one breaks it
(curt, rude, rambling or no greeting).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "src/attune/builtin/data"
INSTRUCTION = (
    'Triage this support ticket. Reply with JSON only: {"category": "billing|shipping|technical|account", '
    '"priority": "low|medium|high"}.\n\nTicket: '
)
PRODUCTS = ["thermostat", "door sensor", "smart plug", "camera", "hub", "light strip", "smoke detector", "doorbell"]
NAMES = ["Ana", "Ben", "Chloe", "Dev", "Elif", "Femi", "Gus", "Hana", "Ivo", "Jun", "Kai", "Lena", "Maya", "Noor"]

# (category, priority) -> ticket phrasings; {p} = product, {n} = order number, {d} = a day
TICKETS: dict[tuple[str, str], list[str]] = {
    ("billing", "high"): [
        "I was charged twice for order #{n}. Please refund the duplicate payment today.",
        "My card shows two identical charges for the {p} subscription this month.",
        "You billed me again after I cancelled, and now my account is overdrawn. Fix this urgently.",
        "Double charge on my last invoice for the {p}. I need the money back before {d}.",
        "The renewal charged my card three times overnight. This is urgent.",
        "I see a duplicate payment for order #{n} and rent is due {d}.",
    ],
    ("billing", "medium"): [
        "My invoice for order #{n} shows the wrong tax amount.",
        "The discount code was not applied to my {p} purchase.",
        "Can you change the billing address on my next invoice?",
        "I was charged the full price instead of the sale price for the {p}.",
        "My monthly plan price went up without notice, please explain the new amount.",
        "The receipt for order #{n} lists the wrong company name.",
    ],
    ("billing", "low"): [
        "Do you offer annual billing for the {p} plan?",
        "Just wondering whether you accept bank transfers.",
        "Is there a student discount on the premium plan?",
        "Could you add PayPal as a payment option in the future?",
        "What currency will I be billed in if I move abroad?",
        "How do I download all my past invoices at once?",
    ],
    ("shipping", "high"): [
        "My {p} order #{n} was marked delivered but never arrived, and I need it before {d}.",
        "The package with my smoke detector is lost and I move in on {d}. Urgent.",
        "Order #{n} arrived damaged and the {p} is leaking battery fluid.",
        "Tracking for #{n} has not moved in two weeks and it is a gift for {d}.",
        "Courier left my parcel in the rain and the {p} box is soaked. Need a replacement before {d}.",
        "Wrong address on order #{n}, it ships today, please stop it now!",
    ],
    ("shipping", "medium"): [
        "Order #{n} is a few days late, any update?",
        "I received the {p} but the mounting kit is missing.",
        "Can I change the delivery address for order #{n}?",
        "The tracking link for my {p} shows an error page.",
        "My parcel went to the neighbour's house, can you confirm the drop-off photo?",
        "Only one of the two {p}s in order #{n} arrived.",
    ],
    ("shipping", "low"): [
        "Do you ship to Iceland?",
        "How long does standard delivery usually take?",
        "Is express shipping available for the {p}?",
        "Could you offer plastic-free packaging in the future?",
        "Do you deliver on weekends?",
        "What courier do you use for small orders?",
    ],
    ("technical", "high"): [
        "All my devices went offline after the update and the {p} is not responding at all.",
        "The hub is down and my door sensors stopped working, the house is unprotected.",
        "My smoke detector keeps beeping and the app says it is disconnected. Safety issue!",
        "Complete outage: none of the cameras record since this morning.",
        "The {p} overheats and smells like burning plastic.",
        "After the firmware update the heating is stuck on and the {p} ignores every command.",
    ],
    ("technical", "medium"): [
        "The {p} disconnects from wifi every few hours.",
        "The app crashes when I open the {p} schedule screen.",
        "My {p} shows the wrong temperature by about two degrees.",
        "Pairing the new {p} with the hub fails at the last step.",
        "Notifications from the {p} arrive ten minutes late.",
        "The {p} battery drains in a week instead of a year.",
    ],
    ("technical", "low"): [
        "Does the {p} work with voice assistants?",
        "It would be great if the app had a dark mode.",
        "Can the {p} be used outdoors?",
        "Feature request: let me group lights by floor.",
        "Which wifi bands does the {p} support?",
        "Is there an API to read data from the {p}?",
    ],
    ("account", "high"): [
        "I cannot log in and I am locked out of my account, the alarm is still armed.",
        "Someone changed my password and email, I think my account was hacked.",
        "I am locked out after the password reset and cannot disarm the {p}.",
        "My account was deleted by mistake and all my devices are gone.",
        "Two-factor codes never arrive, I cannot access my account at all and leave on {d}.",
        "Unknown logins from another country on my account right now!",
    ],
    ("account", "medium"): [
        "I want to change the email address on my account.",
        "How do I remove an old {p} from my account?",
        "My partner cannot accept the invitation to share the home.",
        "The account page shows the wrong name.",
        "Please merge my two accounts into one.",
        "I need to transfer the {p} to the new owner of my flat.",
    ],
    ("account", "low"): [
        "Is there a way to export my account data?",
        "Can I have more than one home in an account?",
        "Just curious, how long do you keep activity history?",
        "Suggestion: let me pick a username instead of using my email.",
        "Do you plan to support passkeys?",
        "What happens to my account if I stop using the app?",
    ],
}
OPENERS = ["", "Hello, ", "Hi team, ", "Hey, ", "Good morning. ", "Dear support, "]
CLOSERS = ["", " Thanks.", " Thank you!", " Regards, {name}.", " Cheers", " - {name}"]
DAYS = ["Friday", "Monday", "tomorrow", "the weekend", "Thursday"]


def ticket(text: str, rng: random.Random) -> str:
    body = text.format(p=rng.choice(PRODUCTS), n=rng.randint(10000, 99999), d=rng.choice(DAYS))
    return (rng.choice(OPENERS) + body + rng.choice(CLOSERS)).format(name=rng.choice(NAMES)).strip()


def make_tickets(rng: random.Random) -> tuple[list[dict], list[dict]]:
    train, heldout = [], []
    for (category, priority), phrasings in TICKETS.items():
        answer = json.dumps({"category": category, "priority": priority})
        for i, phrasing in enumerate(phrasings):
            target, copies = (heldout, 5) if i == len(phrasings) - 1 else (train, 3)
            for _ in range(copies):
                target.append({"messages": [
                    {"role": "user", "content": INSTRUCTION + ticket(phrasing, rng)},
                    {"role": "assistant", "content": answer},
                ]})
    rng.shuffle(train)
    rng.shuffle(heldout)
    return train, heldout


QUESTIONS = [
    ("My {p} will not pair with the hub.", "hold the pairing button for ten seconds, then add it again in the app"),
    ("Where is my order #{n}?", "it left our warehouse yesterday; the tracking link in your email updates tonight"),
    ("I was charged twice.", "I have refunded the duplicate charge; it reaches your card in three to five days"),
    ("How do I reset my password?", "tap 'Forgot password' on the login screen and follow the emailed link"),
    ("The {p} battery dies quickly.", "please update the firmware in Settings, which fixes the drain on most units"),
    ("Can I return the {p}?", "yes, within 30 days; I have emailed you a prepaid return label"),
    ("The app crashes on start.", "please reinstall the app; your settings are stored in your account"),
    ("Do you ship abroad?", "we ship to all EU countries and the UK, usually within five working days"),
    ("My camera shows a black image.", "check that the privacy shutter is open, then restart the camera from the app"),
    ("Can two people control the home?", "yes, invite them from Home settings and they get their own login"),
]
RUDE = ["That is not our problem.", "Read the manual.", "Figure it out yourself.", "We are busy, try later."]
RAMBLE = (
    "Well, there are many reasons this could happen and honestly it depends on a lot of things like your wifi, "
    "your router, the weather, the firmware, and many other factors we cannot really know from here, so maybe "
    "try a few things and see what happens, and if nothing works you could write again at some point, "
    "although we cannot promise anything; {fix}, or maybe not."
)


def make_prefs(rng: random.Random) -> tuple[list[dict], list[dict]]:
    rows = []
    for q, fix in QUESTIONS:
        for _ in range(25):
            prompt = ticket(rng.choice(OPENERS) + q, rng)
            chosen = f"Thanks for reaching out! {fix[0].upper()}{fix[1:]}. Let us know if anything else comes up."
            kind = rng.choice(["rude", "ramble", "nogreet", "curt"])
            rejected = {
                "rude": rng.choice(RUDE),
                "ramble": RAMBLE.format(fix=fix),
                "nogreet": f"{fix[0].upper()}{fix[1:]}.",
                "curt": "Ok.",
            }[kind]
            rows.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
    rng.shuffle(rows)
    return rows[:200], rows[200:250]


def write(name: str, rows: list[dict]) -> None:
    (OUT / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(f"wrote {len(rows)} records to {OUT / name}")


def main() -> None:
    rng = random.Random(20261122)
    train, heldout = make_tickets(rng)
    write("tickets-train.jsonl", train)
    write("tickets-heldout.jsonl", heldout)
    prefs, prefs_heldout = make_prefs(rng)
    write("support-prefs.jsonl", prefs)
    write("support-prefs-heldout.jsonl", prefs_heldout)


if __name__ == "__main__":
    main()
