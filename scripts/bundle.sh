#!/usr/bin/env bash
# Builds every test binary and benchmark example in release mode and collects them, with
# run_all.sh, in one folder (default: bundle/) that runs on a GPU machine without a Rust
# toolchain. The binaries load libcuda at run time.
#
#   scripts/bundle.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-bundle}"
rm -rf "$out"
mkdir -p "$out/tests" "$out/examples"

# Test binaries: cargo prints their paths as JSON artifacts.
cargo test --release --workspace --no-run --message-format=json 2>/dev/null \
  | python3 -c '
import json, sys, os, shutil
out = sys.argv[1]
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("profile", {}).get("test") and m.get("executable"):
        name = m["target"]["name"]
        if m["target"]["kind"] == ["lib"]:
            name = "unit_" + name
        shutil.copy(m["executable"], os.path.join(out, "tests", name))
' "$out"

cargo build --release --examples
for src in examples/*.rs; do
  name="$(basename "$src" .rs)"
  cp "target/release/examples/$name" "$out/examples/"
done
cp scripts/run_all.sh "$out/"
[ -d scripts/gpu ] && cp -r scripts/gpu "$out/"
ls "$out/tests" "$out/examples"
du -sh "$out"
# The same folder as one archive: what the GPU machine is given when the folder itself
# is too big to send. Every binary embeds the same PTX (~10 MB), so xz gets a dictionary
# larger than the folder's files put together (512 MiB, ~5 GiB of memory while it
# compresses): the copies then cost almost nothing, 849 MB -> 7 MB (xz's default 8 MiB
# dictionary gave over 64 MB, above what the device tool carries).
tar cf - -C "$out" . | xz -T1 --lzma2=preset=6,dict=512MiB >"$out.tar.xz"
du -sh "$out.tar.xz"
