"""Write builtin:support-replies, the demonstrations of the alignment recipes' SFT stage.

    python scripts/make_align_data.py

The first N_DEMOS training pairs of builtin:support-prefs, as chats whose assistant turn is the
chosen reply: the supervised step of the InstructGPT pipeline (demonstrations, then preferences).
Few on purpose, so the SFT model only partly adopts the house style and the preference stage
(DPO, or reward + PPO) has something left to teach. Deterministic: it only reads a shipped file.
"""

from __future__ import annotations

import json
from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / "src/attune/builtin/data"
N_DEMOS = 40


def main() -> None:
    pairs = [json.loads(line) for line in (DATA / "support-prefs.jsonl").read_text().splitlines()][:N_DEMOS]
    rows = [{"messages": [{"role": "user", "content": p["prompt"]}, {"role": "assistant", "content": p["chosen"]}]} for p in pairs]
    (DATA / "support-replies.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(f"wrote {len(rows)} demonstrations to {DATA / 'support-replies.jsonl'}")


if __name__ == "__main__":
    main()
