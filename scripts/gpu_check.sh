#!/usr/bin/env bash
# The GPU check: every GPU path of attune, one line per check with its measurement, < 8 minutes on one GPU.
#
#   bash scripts/gpu_check.sh                       # all checks
#   bash scripts/gpu_check.sh --only sft-lora,dpo   # some of them
#   bash scripts/gpu_check.sh --list                # names and what each measures
#   bash scripts/gpu_check.sh --dry-run             # print the commands, run nothing (no GPU needed)
#
# Options: --out DIR (default gpu-check-out), --seconds N (training time per run, default 20),
# --python PY (default: $PYTHON, else python3). Exit status: 0 all passed or skipped, 1 a check
# failed, 2 bad arguments, 3 no GPU. Optional peers (vllm, unsloth) are SKIPped when not installed.
set -u -o pipefail

CHECKS="sft-lora sft-full qlora dpo fsdp-1gpu zero3-1gpu vllm-serve sft-vs-trl unsloth"
declare -A WHAT=(
  [sft-lora]="bf16 LoRA SFT, builtin model, SDPA/flash: steps, loss, sup tok/s, peak GPU memory"
  [sft-full]="bf16 full SFT, builtin model: steps, loss, sup tok/s, peak GPU memory"
  [qlora]="QLoRA (bitsandbytes 4-bit on CUDA): steps, loss, sup tok/s, peak GPU memory"
  [dpo]="DPO with LoRA on builtin:support-prefs: steps, loss, peak GPU memory"
  [fsdp-1gpu]="accelerate launch with the shipped fsdp config on 1 GPU: trains, complete adapter"
  [zero3-1gpu]="accelerate launch with the shipped zero3 config on 1 GPU: trains, complete adapter"
  [vllm-serve]="attune serve --backend vllm with two LoRA adapters, answered through the openai client"
  [sft-vs-trl]="SFT throughput and peak memory: attune vs TRL's best config (and Unsloth when installed)"
  [unsloth]="whether Unsloth is installed (measured inside sft-vs-trl)"
)
# per-check wall-clock limits (seconds): they add up to 460 s, so a full run ends within 8 minutes
declare -A LIMIT=([sft-lora]=40 [sft-full]=40 [qlora]=40 [dpo]=40 [fsdp-1gpu]=45 [zero3-1gpu]=45 [vllm-serve]=110 [sft-vs-trl]=90 [unsloth]=10)

usage() { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; }

ONLY="" OUT="gpu-check-out" SECONDS_PER_RUN=20 DRY=0 PY="${PYTHON:-python3}"
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --list) for c in $CHECKS; do printf '%-12s %s\n' "$c" "${WHAT[$c]}"; done; exit 0 ;;
    --dry-run) DRY=1 ;;
    --only) [ $# -ge 2 ] || { echo "gpu_check: --only needs a comma-separated list of checks" >&2; exit 2; }; ONLY="$2"; shift ;;
    --only=*) ONLY="${1#*=}" ;;
    --out) [ $# -ge 2 ] || { echo "gpu_check: --out needs a directory" >&2; exit 2; }; OUT="$2"; shift ;;
    --seconds) [ $# -ge 2 ] || { echo "gpu_check: --seconds needs a number" >&2; exit 2; }; SECONDS_PER_RUN="$2"; shift ;;
    --python) [ $# -ge 2 ] || { echo "gpu_check: --python needs an interpreter" >&2; exit 2; }; PY="$2"; shift ;;
    *) echo "gpu_check: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
case "$SECONDS_PER_RUN" in ''|*[!0-9.]*) echo "gpu_check: --seconds must be a positive number, got '$SECONDS_PER_RUN'" >&2; exit 2 ;; esac

SELECTED="$CHECKS"
if [ -n "$ONLY" ]; then
  SELECTED=""
  for c in ${ONLY//,/ }; do
    case " $CHECKS " in *" $c "*) SELECTED="$SELECTED $c" ;;
      *) echo "gpu_check: unknown check '$c'; choose from: $CHECKS" >&2; exit 2 ;; esac
  done
fi

HERE="$(cd "$(dirname "$0")" && pwd)"
if [ "$DRY" = 1 ]; then
  for c in $SELECTED; do
    echo "timeout ${LIMIT[$c]} $PY $HERE/gpu_check.py $c --out $OUT --seconds $SECONDS_PER_RUN"
  done
  exit 0
fi

if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  echo "gpu_check: no CUDA GPU visible to $PY (torch.cuda.is_available() is False); nothing was run" >&2
  exit 3
fi

mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
FAILED=0 START=$(date +%s)
"$PY" -c "import torch; print('gpu:', torch.cuda.get_device_name(0), '| torch', torch.__version__, '| CUDA', torch.version.cuda)"
for c in $SELECTED; do
  t0=$(date +%s)
  line=$(timeout "${LIMIT[$c]}" "$PY" "$HERE/gpu_check.py" "$c" --out "$OUT" --seconds "$SECONDS_PER_RUN" 2>"$OUT/$c.err" | grep '^CHECK ' | tail -1)
  rc=$?
  if [ -z "$line" ]; then
    reason="no result"; [ "$rc" = 124 ] && reason="timed out after ${LIMIT[$c]}s"
    line="CHECK $c FAIL $reason (stderr: $OUT/$c.err)"
  fi
  case "$line" in *" FAIL "*) FAILED=1 ;; esac
  echo "${line#CHECK } [$(( $(date +%s) - t0 ))s]"
done
echo "total $(( $(date +%s) - START ))s"
exit $FAILED
