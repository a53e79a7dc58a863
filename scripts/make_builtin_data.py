"""Write the builtin support datasets (seeded, so re-running reproduces the shipped files).

    python scripts/make_builtin_data.py

tickets-*.jsonl: support-ticket triage for Northwind Home (the fictional smart-home company of
the builtin corpus). The reply is strict JSON {"category": ..., "priority": ...}. Priority follows
cues a model can learn: high = an outage or a device dead, a safety risk, locked out or hacked,
charged twice, or a hard deadline; low = a general question, feedback or a feature request;
medium = a concrete problem that is none of those. Train and held-out tickets are written from
disjoint phrasings (and disjoint greetings), so the held-out score measures generalisation.

support-prefs*.jsonl: preference pairs. House style: the reply starts with "Thanks for reaching
out" and stays under 60 words. Every rejected reply breaks it (curt, rude, rambling, a different
greeting, or the right answer without the greeting). Held-out pairs ask about issues that never
appear in the training pairs. Replies stay generic about policy so they do not leak the facts
of the builtin corpus (those are for the RAG questions).
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
# Devices that pair with the hub ({p}); the hub itself is named where a phrasing means it.
PRODUCTS = ["T7 thermostat", "D3 door sensor", "smart plug", "C5 camera", "light strip", "smoke detector",
            "video doorbell"]
NAMES = ["Ana", "Ben", "Chloe", "Dev", "Elif", "Femi", "Gus", "Hana", "Ivo", "Jun", "Kai", "Lena", "Maya", "Noor",
         "Omar", "Pia", "Rui", "Sofia", "Tomas", "Yara"]
DAYS = ["Friday", "Monday", "tomorrow", "Saturday", "Thursday", "the 14th"]

# (category, priority) -> (train phrasings, held-out phrasings). Slots: {p} product, {n} order
# number, {d} a day. Held-out phrasings say the same kind of thing in words train never uses.
TICKETS: dict[tuple[str, str], tuple[list[str], list[str]]] = {
    ("billing", "high"): ([
        "I was charged twice for order #{n}. Please refund the duplicate payment today.",
        "My card shows two identical charges for the Plus subscription this month.",
        "You billed me again after I cancelled and now my account is overdrawn. Please fix this urgently.",
        "Double charge on my last invoice for the {p}. I need the money back before {d}.",
        "The renewal charged my card three times overnight. This is urgent.",
        "There is a duplicate payment for order #{n} and my rent is due {d}.",
        "Charged twice for the same {p}! Refund one of them please, I am short on money this month.",
        "Your checkout took the payment twice when the page froze. Order #{n}.",
        "I have been charged two times for my annual plan, please reverse one charge as soon as possible.",
        "Urgent: the same amount left my account twice for order #{n}.",
    ], [
        "My bank statement lists the {p} purchase on two separate lines for the exact same sum. I need one reversed.",
        "The subscription fee was taken from my account once on the 1st and once more on the 2nd. That cannot be right, sort it out now.",
        "Payment for order #{n} went through two times after the app hung. I need the extra amount returned before {d}.",
    ]),
    ("billing", "medium"): ([
        "My invoice for order #{n} shows the wrong tax amount.",
        "The discount code was not applied to my {p} purchase.",
        "Can you change the billing address on my next invoice?",
        "I was charged the full price instead of the sale price for the {p}.",
        "My monthly plan price went up without notice, please explain the new amount.",
        "The receipt for order #{n} lists the wrong company name.",
        "I cancelled Plus last month but the app still says my subscription is active.",
        "My gift card balance was not used on order #{n}.",
        "The refund for my returned {p} has not shown up yet.",
        "Please update the card on file, my old one expired.",
    ], [
        "The VAT number is missing from the PDF I got for order #{n}, our accountant needs it added.",
        "The promo from your newsletter should have taken 15% off the {p} but I paid the normal amount.",
        "I switched from monthly to yearly and the amount on the statement does not match what the app showed me.",
    ]),
    ("billing", "low"): ([
        "Do you offer annual billing for the Plus plan?",
        "Just wondering whether you accept bank transfers.",
        "Is there a student discount on the Plus plan?",
        "Could you add PayPal as a payment option in the future?",
        "What currency will I be billed in if I move abroad?",
        "How do I download all my past invoices at once?",
        "Is the price of Plus going to change next year?",
        "Can a company pay for several homes on one invoice?",
        "Suggestion: send a reminder email a week before the yearly renewal.",
        "Do gift cards expire?",
    ], [
        "Out of curiosity, which payment methods work in Switzerland?",
        "It would be nice to choose the day of the month my plan renews. Any plans for that?",
        "Are your prices shown with or without VAT?",
    ]),
    ("shipping", "high"): ([
        "My {p} order #{n} was marked delivered but never arrived, and I need it before {d}.",
        "The package with my smoke detector is lost and I move in on {d}. Urgent.",
        "Order #{n} arrived damaged and the {p} is leaking battery fluid.",
        "Tracking for #{n} has not moved in two weeks and it is a gift for {d}.",
        "The courier left my parcel in the rain and the {p} box is soaked. I need a replacement before {d}.",
        "Wrong address on order #{n}, it ships today, please stop it now!",
        "I need the {p} for a rental inspection on {d} and order #{n} still has not left your warehouse.",
        "Urgent: my parcel was delivered to the wrong city and I leave on {d}.",
        "The box for order #{n} arrived open and empty.",
        "Order #{n} is stuck in customs and the install is booked for {d}. Please help today.",
    ], [
        "The driver says he handed over order #{n} but nobody here got anything, and the electrician comes {d}.",
        "What arrived for order #{n} is crushed and the {p} inside has a cracked casing with wires showing.",
        "We open the office on {d} and the {p} we ordered is nowhere to be found, the tracking page gave up days ago.",
    ]),
    ("shipping", "medium"): ([
        "Order #{n} is a few days late, any update?",
        "I received the {p} but the mounting kit is missing.",
        "Can I change the delivery address for order #{n}?",
        "The tracking link for my {p} shows an error page.",
        "My parcel went to the neighbour's house, can you confirm the drop-off photo?",
        "Only one of the two {p}s in order #{n} arrived.",
        "Order #{n} contains a different product than the {p} I ordered.",
        "The return label you emailed for order #{n} does not scan at the post office.",
        "Can you combine my two open orders into one delivery?",
        "The C5 camera arrived without a power adapter.",
    ], [
        "Parcel #{n} came but the screws and wall plugs for the {p} are not in the box.",
        "The delivery slot for order #{n} clashes with my work hours, can it come another week?",
        "The courier's website keeps saying the number for order #{n} is invalid.",
    ]),
    ("shipping", "low"): ([
        "Do you ship to Iceland?",
        "How long does standard delivery usually take?",
        "Is express shipping available for the {p}?",
        "Could you offer plastic-free packaging in the future?",
        "Do you deliver on weekends?",
        "What courier do you use for small orders?",
        "Can I pick up an order in person from your warehouse?",
        "Just a question: do you ship replacement parts separately?",
        "Would you consider adding parcel lockers as a delivery option?",
        "Is shipping free above a certain order value?",
    ], [
        "Curious whether you send orders to the Canary Islands.",
        "A thought: letting us choose a greener, slower delivery would be great.",
        "Which days of the week do parcels normally leave your depot?",
    ]),
    ("technical", "high"): ([
        "All my devices went offline after the update and the {p} is not responding at all.",
        "The hub is down and my door sensors stopped working, the house is unprotected.",
        "My smoke detector keeps beeping and the app says it is disconnected. Safety issue!",
        "Complete outage: none of the cameras have recorded anything since this morning.",
        "The {p} overheats and smells like burning plastic.",
        "After the firmware update the heating is stuck on and the thermostat ignores every command.",
        "The whole system is offline, nothing responds and the alarm cannot be armed.",
        "My smart plug sparked when I plugged it in. Is it safe to keep using?",
        "The app shows every device as unreachable since last night, total outage.",
        "The heating has been dead since yesterday and it is freezing, the thermostat shows an error.",
    ], [
        "Since about 7am not a single sensor reports in and the siren will not trigger. We are away on {d}.",
        "There is a hot smell coming from the {p} and the casing has gone brown near the vents.",
        "Every light, plug and camera in the flat vanished from the app at once and nothing comes back after restarts.",
    ]),
    ("technical", "medium"): ([
        "The {p} disconnects from wifi every few hours.",
        "The app crashes when I open the {p} schedule screen.",
        "My thermostat shows the wrong temperature by about two degrees.",
        "Pairing the new {p} with the hub fails at the last step.",
        "Notifications from the {p} arrive ten minutes late.",
        "The door sensor battery drains in a week instead of a year.",
        "Motion alerts from the C5 camera trigger on passing cars.",
        "The schedule I set for the {p} resets after every reboot.",
        "Night vision on the C5 camera is very grainy since the update.",
        "The {p} shows offline for a minute every evening and then comes back.",
    ], [
        "Each time my phone goes to sleep the app forgets the {p} and I have to add it again.",
        "Readings from the thermostat lag behind reality by a good quarter of an hour.",
        "The {p} answers commands, just slowly, often five or six seconds later.",
    ]),
    ("technical", "low"): ([
        "Does the {p} work with voice assistants?",
        "It would be great if the app had a dark mode.",
        "Can the {p} be used outdoors?",
        "Feature request: let me group lights by floor.",
        "Which wifi bands does the {p} support?",
        "Is there an API to read data from the {p}?",
        "Could you add a widget for the home screen?",
        "Will the {p} get Matter support?",
        "How many devices can one hub handle?",
        "Idea: a vacation mode that turns lights on at random.",
    ], [
        "Wondering if the {p} talks to Apple Home at all.",
        "Please consider letting the app export sensor history to a spreadsheet someday.",
        "What is the range between the {p} and the hub through two walls?",
    ]),
    ("account", "high"): ([
        "I cannot log in and I am locked out of my account, and the alarm is still armed.",
        "Someone changed my password and email, I think my account was hacked.",
        "I am locked out after the password reset and cannot disarm the alarm.",
        "My account was deleted by mistake and all my devices are gone.",
        "Two-factor codes never arrive, I cannot access my account at all and I leave on {d}.",
        "There are unknown logins from another country on my account right now!",
        "I cannot log in since this morning, the app says my account does not exist.",
        "My ex still has access to my home and cameras, please remove them immediately.",
        "Locked out of the app and the door sensor alarm keeps going off.",
        "Cannot log in at all, the reset email never comes and I need to let the plumber in {d}.",
    ], [
        "Every sign-in attempt fails with 'invalid credentials' even with the new password, so the cameras are unreachable for me.",
        "I got a notice that my email on file was changed, but that wasn't me. Someone else is in there.",
        "The app threw me out and now refuses my details, and I have guests arriving {d} who need the door code.",
    ]),
    ("account", "medium"): ([
        "I want to change the email address on my account.",
        "How do I remove an old {p} from my account?",
        "My partner cannot accept the invitation to share the home.",
        "The account page shows the wrong name.",
        "Please merge my two accounts into one.",
        "I need to transfer the {p} to the new owner of my flat.",
        "My phone number is wrong in the account settings and I cannot edit it.",
        "The family member I removed still shows up in the home list.",
        "I changed phones and my home layout did not carry over.",
        "I would like to close the second account I created by accident.",
    ], [
        "The profile insists my language is German although I picked English twice.",
        "My teenager needs a login of their own without seeing the cameras, how do I set that up?",
        "A home I sold last year is still listed under my profile.",
    ]),
    ("account", "low"): ([
        "Is there a way to export my account data?",
        "Can I have more than one home in an account?",
        "Just curious, how long do you keep activity history?",
        "Suggestion: let me pick a username instead of using my email.",
        "Do you plan to support passkeys?",
        "What happens to my account if I stop using the app?",
        "Can I log in on a tablet and a phone at the same time?",
        "Is it possible to rename my home in the app?",
        "Feature idea: let guests have time-limited access.",
        "Do you have a privacy policy in Spanish?",
    ], [
        "Is a fingerprint sign-in on the roadmap?",
        "Roughly how many people can be invited to one household?",
        "It would be handy to see a log of who changed settings, maybe in a future version.",
    ]),
}
TRAIN_OPENERS = ["", "", "Hello, ", "Hi team, ", "Hi, ", "Good morning. ", "Dear support, "]
TRAIN_CLOSERS = ["", "", " Thanks.", " Thank you!", " Regards, {name}.", " Cheers", " - {name}"]
HELDOUT_OPENERS = ["", "Hey there! ", "Hi folks, ", "Good evening. "]
HELDOUT_CLOSERS = ["", " Many thanks, {name}", " Best, {name}", " Appreciate it."]
TRAIN_PER_CLASS, HELDOUT_TOTAL = 27, 80


def ticket(text: str, rng: random.Random, openers: list[str], closers: list[str]) -> str:
    body = text.format(p=rng.choice(PRODUCTS), n=rng.randint(10000, 99999), d=rng.choice(DAYS))
    opener = rng.choice(openers)
    if opener.endswith(", ") and not body.startswith(("I ", "I'")):
        body = body[0].lower() + body[1:]
    return (opener + body + rng.choice(closers)).format(name=rng.choice(NAMES)).strip()


def make_tickets(rng: random.Random) -> tuple[list[dict], list[dict]]:
    train, heldout = [], []
    classes = list(TICKETS.items())
    per_class_heldout = [HELDOUT_TOTAL // len(classes) + (i < HELDOUT_TOTAL % len(classes)) for i in range(len(classes))]
    for ((category, priority), (train_texts, heldout_texts)), n_heldout in zip(classes, per_class_heldout):
        answer = json.dumps({"category": category, "priority": priority})
        for texts, n, target, openers, closers in (
            (train_texts, TRAIN_PER_CLASS, train, TRAIN_OPENERS, TRAIN_CLOSERS),
            (heldout_texts, n_heldout, heldout, HELDOUT_OPENERS, HELDOUT_CLOSERS),
        ):
            for k in range(n):
                user = INSTRUCTION + ticket(texts[k % len(texts)], rng, openers, closers)
                target.append({"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]})
    rng.shuffle(train)
    rng.shuffle(heldout)
    return train, heldout


# Customer issues: (phrasings, helpful answers). The last few are held out.
ISSUES: list[tuple[list[str], list[str]]] = [
    (["My {p} will not pair with the hub.", "I can't get the {p} to connect to my hub, it fails every time."],
     ["Please restart the hub, keep the {p} within a few metres of it and start pairing again from the app.",
      "Moving the {p} closer to the hub and restarting both usually fixes pairing; then add it again in the app."]),
    (["Where is my order #{n}?", "Order #{n} still hasn't arrived, what's going on?"],
     ["I have checked order #{n}: it is with the courier, and the tracking link in your email shows each update.",
      "Order #{n} is on its way; I have asked the courier for a delivery date and will email it to you."]),
    (["I was charged twice for my subscription.", "Two charges for the same order #{n} on my card."],
     ["I can see the duplicate charge and have refunded it; your bank will show it within a few days.",
      "That second charge was a mistake on our side. I have refunded it and emailed you the confirmation."]),
    (["How do I reset my password?", "I forgot my password and can't sign in."],
     ["Tap 'Forgot password' on the sign-in screen and follow the link we email you.",
      "Use 'Forgot password' on the sign-in screen; the reset link arrives by email within a minute."]),
    (["The door sensor battery dies really quickly.", "Why does my D3 sensor eat batteries every week?"],
     ["Please update the sensor firmware from the app; the latest version fixes the drain on most units.",
      "A firmware update from the app fixes this on most units. If it continues, we will replace the sensor."]),
    (["Can I return the {p}?", "The {p} isn't for me, how do I send it back?"],
     ["Yes. I have emailed you a prepaid return label; pack the {p} in any sturdy box.",
      "Of course. Your prepaid return label is in your inbox, and the refund follows once it reaches us."]),
    (["The app crashes as soon as I open it.", "Your app keeps closing on my phone."],
     ["Please update the app and restart your phone; your homes and devices are saved in your account.",
      "Reinstalling the latest version of the app fixes this; nothing is lost, your setup is stored in your account."]),
    (["Do you ship outside the EU?", "Can I order from Norway?"],
     ["We ship to most European countries; the checkout shows the options and price for your address.",
      "Yes, enter your address at checkout and it shows the delivery options and cost for your country."]),
    (["My camera only shows a black image.", "The C5 camera feed is completely dark."],
     ["Please check that the privacy shutter is open, then restart the camera from the app.",
      "Open the privacy shutter on the front and restart the camera from the app; the picture should return."]),
    (["Can two people control the same home?", "How do I give my partner access?"],
     ["Yes, invite them from Home settings in the app; they get their own sign-in.",
      "Invite your partner from Home settings and they can control everything with their own account."]),
    (["The {p} keeps dropping off wifi.", "My {p} disconnects every evening."],
     ["Please move the {p} closer to your router or hub and check it is on the 2.4 GHz network.",
      "Drop-outs usually mean a weak signal. Moving the {p} or the router a little closer fixes most cases."]),
    (["My discount code didn't work on order #{n}.", "The promo code was not applied to order #{n}."],
     ["I have applied the discount to order #{n} by hand and refunded the difference to your card.",
      "Sorry about that. I refunded the discount amount for order #{n}; it shows on your card within days."]),
    (["How do I cancel my Plus plan?", "I want to stop my subscription."],
     ["You can cancel any time under Account > Plan in the app; your devices keep working on the free plan.",
      "Go to Account > Plan in the app and tap Cancel. Your devices keep working on the free plan."]),
    (["The {p} arrived broken.", "My {p} was cracked when I opened the box."],
     ["I am sorry it arrived damaged. A replacement {p} ships today and you do not need to return the broken one.",
      "Sorry about that. I have sent a replacement {p} at no cost; please recycle the damaged one."]),
    (["Notifications come in really late.", "I get door alerts minutes after the door opens."],
     ["Please allow the app to run in the background in your phone settings; that makes alerts instant again.",
      "Late alerts usually come from battery saving on the phone. Exempt our app from it and alerts arrive at once."]),
    (["Does the {p} work with Google Home?", "Can I use voice control with the {p}?"],
     ["Yes, link your account in the Google Home app under Works with Google, then say 'Hey Google, sync my devices'.",
      "It does: link your account in the Google Home app and the {p} appears there within a minute."]),
    (["I want to delete my account.", "Please remove all my data."],
     ["I can do that for you. Please confirm from the email I just sent, and your account and data are removed.",
      "Deletion removes your homes, devices and history. Confirm using the link I emailed and it is done."]),
    (["The thermostat shows the wrong temperature.", "My T7 reads three degrees too warm."],
     ["Please make sure the T7 is not in direct sun or above a radiator, then set an offset in its settings.",
      "You can correct this with the temperature offset in the T7 settings; also keep it away from heat sources."]),
    (["My invoice for order #{n} has the wrong address.", "The receipt for order #{n} shows my old address."],
     ["I have corrected the address and emailed you an updated invoice for order #{n}.",
      "The invoice is fixed; a corrected copy for order #{n} is now in your inbox and under Account > Invoices."]),
    (["Can I change the delivery address for order #{n}?", "I moved, can order #{n} go to my new address?"],
     ["If order #{n} has not shipped yet I can change it; please reply with the new address.",
      "Yes, as long as it has not left the warehouse. Send me the new address and I will update order #{n}."]),
    (["The light strip flickers.", "My light strip blinks randomly at night."],
     ["Please update the light strip firmware and check the power adapter is the one from the box.",
      "Flicker usually comes from an older firmware or a different adapter. Update it from the app and use the original adapter."]),
    (["My smoke detector chirps every minute.", "The smoke detector keeps beeping."],
     ["A chirp every minute means a low battery. Please replace it, then press test to confirm it works.",
      "That chirp is the low-battery warning. A fresh battery stops it; press the test button afterwards."]),
    # held out from here on
    (["The doorbell doesn't ring inside.", "My video doorbell rings on the phone but not in the house."],
     ["Please check the chime setting in the doorbell settings and make sure the chime is paired with the hub.",
      "Turn on the indoor chime in the doorbell settings, then re-pair the chime if it still stays silent."]),
    (["Can I get an invoice with my company name for order #{n}?", "I need a business invoice for order #{n}."],
     ["Yes, add your company details under Account > Billing and I will send a new invoice for order #{n}.",
      "Of course. Reply with your company name and VAT number and I will reissue the invoice for order #{n}."]),
    (["My smart plug switches off by itself.", "The smart plug turns off randomly."],
     ["Please check the schedules and automations for the plug in the app; one of them is probably switching it off.",
      "This is usually an automation. Check the plug's schedule in the app, and update its firmware too."]),
    (["I lost my phone, can someone get into my account?", "My phone was stolen and the app is on it."],
     ["Please change your password now and sign out all devices under Account > Security; I will watch for odd logins.",
      "Sign out all devices under Account > Security and change your password; your home stays safe after that."]),
    (["Do you sell refurbished devices?", "Are there cheaper second-hand hubs?"],
     ["Yes, our refurbished section has checked devices with a full warranty; stock changes every week.",
      "We do. Refurbished devices are listed in the shop with the same warranty as new ones."]),
]
N_HELDOUT_ISSUES = 5

RUDE = ["That is not our problem.", "Did you even read the manual?", "Figure it out yourself.",
        "We are busy, try again later.", "Not our fault, talk to your internet provider.",
        "This is covered in the FAQ. Please read it before writing to us.", "Stop emailing us about this."]
CURT = ["Ok.", "Noted.", "Restart it.", "Check the app.", "See FAQ.", "Try again.", "Will look."]
RAMBLE = [
    "Hmm, hard to say really, these things happen for all sorts of reasons, could be the wifi, could be the "
    "device, could be something else entirely, so maybe just give it a while and see.",
    "Well, there are lots of possible causes and honestly it depends on many factors we cannot know from here, "
    "so perhaps try a few things and write again at some point if nothing helps.",
    "So, we get messages like this quite often and every case is a bit different, some people fix it one way, "
    "some another, it really varies, so it is difficult to give one answer.",
]
WRONG_GREETINGS = ["Hello! ", "Thank you for contacting us. ", "Hi there. ", "Dear customer, "]
CHOSEN_OPENINGS = ["Thanks for reaching out! ", "Thanks for reaching out, {name}. ", "Thanks for reaching out about this. "]
CHOSEN_CLOSINGS = ["", " Let us know if anything else comes up.", " Reply here if it happens again.",
                   " Have a good day!"]
PROMPT_OPENERS = ["", "", "Hi, ", "Hello, ", "Good morning. "]
PROMPT_CLOSERS = ["", "", " Thanks.", " - {name}", " Regards, {name}"]
N_PREFS_TRAIN, N_PREFS_HELDOUT = 200, 50


def fill(text: str, slots: dict[str, str]) -> str:
    return text.format(**slots)


def make_pair(issue: tuple[list[str], list[str]], rng: random.Random) -> dict:
    phrasings, answers = issue
    slots = {"p": rng.choice(PRODUCTS), "n": str(rng.randint(10000, 99999)), "name": rng.choice(NAMES)}
    body = fill(rng.choice(phrasings), slots)
    opener = rng.choice(PROMPT_OPENERS)
    if opener.endswith(", ") and not body.startswith(("I ", "I'")):
        body = body[0].lower() + body[1:]
    closer = rng.choice(PROMPT_CLOSERS)
    prompt = (opener + body + fill(closer, slots)).strip()
    answer = fill(rng.choice(answers), slots)
    openings = CHOSEN_OPENINGS if "{name}" in closer else [o for o in CHOSEN_OPENINGS if "{name}" not in o]
    chosen = fill(rng.choice(openings), slots) + answer + rng.choice(CHOSEN_CLOSINGS)
    kind = rng.choice(["rude", "curt", "ramble", "wrong-greeting", "no-greeting"])
    rejected = {
        "rude": lambda: rng.choice(RUDE),
        "curt": lambda: rng.choice(CURT),
        "ramble": lambda: rng.choice(RAMBLE),
        "wrong-greeting": lambda: rng.choice(WRONG_GREETINGS) + answer,
        "no-greeting": lambda: answer,
    }[kind]()
    assert chosen.startswith("Thanks for reaching out") and len(chosen.split()) < 60, chosen
    assert not rejected.startswith("Thanks for reaching out"), rejected
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected}


def make_prefs(rng: random.Random) -> tuple[list[dict], list[dict]]:
    train_issues, heldout_issues = ISSUES[:-N_HELDOUT_ISSUES], ISSUES[-N_HELDOUT_ISSUES:]
    train = [make_pair(train_issues[k % len(train_issues)], rng) for k in range(N_PREFS_TRAIN)]
    heldout = [make_pair(heldout_issues[k % len(heldout_issues)], rng) for k in range(N_PREFS_HELDOUT)]
    rng.shuffle(train)
    rng.shuffle(heldout)
    return train, heldout


def support_eval_rows(heldout: list[dict]) -> list[dict]:
    """The held-out pairs as eval rows: the house-style checks for generated replies (tasks/support-style)
    and the pair as a two-way choice, chosen first (tasks/support-choice)."""
    checks = json.dumps({"starts_with": "Thanks for reaching out", "max_words": 59})
    return [{"prompt": r["prompt"], "checks": checks, "choices": [r["chosen"], r["rejected"]], "label": 0} for r in heldout]


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
    write("support-eval-heldout.jsonl", support_eval_rows(prefs_heldout))


if __name__ == "__main__":
    main()
