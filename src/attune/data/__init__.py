"""The data layer: files -> canonical records -> token ids with loss masks.

See docs/data.md for the accepted formats. Training, evaluation and `attune data` use only
what is exported here.
"""

from attune.data.formats import detect_format
from attune.data.loading import iter_records, load_records
from attune.data.records import (
    ChatRecord,
    CompletionRecord,
    DataError,
    Message,
    PreferenceRecord,
    Problem,
    PromptRecord,
    Record,
    TextRecord,
)
from attune.data.render import (
    Encoded,
    EncodedPreference,
    encode_chat,
    encode_completion,
    encode_preference,
    encode_prompt,
    encode_record,
    encode_text,
    render_chat,
)
from attune.data.split import mix_datasets, train_val_split

__all__ = [
    "ChatRecord",
    "CompletionRecord",
    "DataError",
    "Encoded",
    "EncodedPreference",
    "Message",
    "PreferenceRecord",
    "Problem",
    "PromptRecord",
    "Record",
    "TextRecord",
    "detect_format",
    "encode_chat",
    "encode_completion",
    "encode_preference",
    "encode_prompt",
    "encode_record",
    "encode_text",
    "iter_records",
    "load_records",
    "mix_datasets",
    "render_chat",
    "train_val_split",
]
