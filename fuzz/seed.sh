#!/usr/bin/env bash
# Seeds each fuzz target's corpus from the golden vectors in tests/vectors/ (and the
# certificate target's from tests/certificates/).
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p corpus/snapshot_bytes corpus/snapshot_body corpus/snapshot_flags corpus/dna corpus/frame_v2 corpus/mesh_frame corpus/stream_records \
  corpus/certificate corpus/control_request corpus/container corpus/inbox \
  corpus/suspended_call corpus/transform_record corpus/log_file corpus/cell_event corpus/flash_keeper \
  corpus/fleet_record corpus/fleet_certificate
for v in ../tests/vectors/v*.bin; do
  name=$(basename "$v" .bin)
  case "$name" in
  v2-*)
    # Mode 3 (no size claim), then the frame as it is.
    { printf '\3'; cat "$v"; } >"corpus/frame_v2/$name"
    cp "$v" "corpus/snapshot_bytes/$name"
    continue
    ;;
  v3-*)
    # Mode 7 (no length claim), then the container as it is.
    { printf '\7'; cat "$v"; } >"corpus/container/$name"
    cp "$v" "corpus/snapshot_bytes/$name"
    continue
    ;;
  esac
  cp "$v" "corpus/snapshot_bytes/$name"
  # The body: without the 8-byte header and the 32-byte trailer.
  len=$(($(wc -c <"$v") - 40))
  tail -c +9 "$v" | head -c "$len" >"corpus/snapshot_body/$name"
  # The flags word, then everything between the header and the trailer.
  tail -c +7 "$v" | head -c "$((len + 2))" >"corpus/snapshot_flags/$name"
done
printf '\0asm\1\0\0\0' >corpus/dna/empty-module
printf '\0asm\x0d\0\1\0' >corpus/dna/component
for v in ../tests/vectors/mesh-*.bin; do
  cp "$v" "corpus/mesh_frame/$(basename "$v" .bin)"
done
# Fleet records: mode 0 (verify), then each signed vector as it is.
for v in ../tests/vectors/fleet-*.bin; do
  { printf '\0'; cat "$v"; } >"corpus/fleet_record/$(basename "$v" .bin)"
done
# Stream records (mesh::records): a split point, then each mesh vector as one frame record.
for v in ../tests/vectors/mesh-*.bin; do
  len=$(wc -c <"$v")
  {
    printf '\7\1'
    printf "$(printf '\\%03o\\%03o\\%03o\\%03o' $((len & 255)) $((len >> 8 & 255)) $((len >> 16 & 255)) $((len >> 24 & 255)))"
    cat "$v"
  } >"corpus/stream_records/$(basename "$v" .bin)"
done
# Certificates: honest ones (rcgen, openssl; Ed25519, ECDSA, RSA) and forgeries with a decoy key.
for v in ../tests/certificates/*.der; do
  cp "$v" "corpus/certificate/$(basename "$v" .der)"
done
# Fleet membership: each golden vector in its place (0 the node's certificate, 1 the revocation
# list, 2 the fleet's certificate).
{ printf '\0'; cat ../tests/certificates/fleet-node.der; } >corpus/fleet_certificate/node
{ printf '\1'; cat ../tests/certificates/fleet-crl.der; } >corpus/fleet_certificate/crl
{ printf '\2'; cat ../tests/certificates/fleet-ca.der; } >corpus/fleet_certificate/ca
# mielin's control socket (mielin::control): status, agents, send pong 41, migrate pong to b,
# a progress reply.
printf '\1\1' >corpus/control_request/status
printf '\1\2' >corpus/control_request/agents
printf '\1\4\4\0pong\4\0\0\0)\0\0\0' >corpus/control_request/send
printf '\1\5\4\0pong\1\0b' >corpus/control_request/migrate
printf '\1\3\1\0\0\0\0\0\0\0\2\0\0\0\0\0\0\0' >corpus/control_request/progress
# Inbox sections: an empty one (a secret, four counts of 0), and the cross vector's
# (tests/vectors/case.rs: a message each way and a stream).
printf '\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0' >corpus/inbox/empty
# Agent events: a message accepted (kind 1: peer, sender, stream, seq, length, bytes), a call
# (kind 2: "tick", no arguments, result 1), an acknowledgement (kind 3: addressee, seq).
python3 - <<'PY'
import struct
open("corpus/cell_event/delivered", "wb").write(
    b"\1" + b"\2" * 16 + b"\3" * 16 + b"\4" * 16 + struct.pack("<QI", 7, 2) + b"hi")
open("corpus/cell_event/called", "wb").write(b"\2\4tick\1\0" + struct.pack("<QI", 5, 1))
open("corpus/cell_event/acked", "wb").write(b"\3" + b"\5" * 16 + struct.pack("<Q", 9))
PY
python3 - <<'PY'
import re
src = open("../tests/vectors/case.rs").read()
body = src[src.index("pub static INBOX"):]
body = body[body.index("= [") + 3:body.index("];")]
out = bytearray()
for tok in re.findall(r"0x[0-9a-f]{2}|b'.'", body):
    out.append(int(tok, 16) if tok.startswith("0x") else ord(tok[2]))
open("corpus/inbox/case", "wb").write(out)
PY
# The log file: a few shapes of log (batches, records per batch, lengths), undamaged, then one
# with a flipped byte and one cut.
printf '\3\2\5\1\0\7\2\0\3\x28\x33\0\0' >corpus/log_file/three-batches
printf '\1\1\4\x61\1\x10\0\x99\0' >corpus/log_file/one-record-flipped
printf '\2\1\3\1\1\4\2\0\1\x50\0' >corpus/log_file/two-batches-cut
# The flash keeper: 20 steps (deliver, take, save in turn), no damage, then the same with two
# bytes changed.
printf '\x14\0\x05\x07\x01\x02\0\x05\x07\x01\0\x05\x07\x02\x01\0\x05\x07\x01\x01\x02\0\x05\x07\0\x05\x07\x01\x02\x01\x01\0\x01' >corpus/flash_keeper/steps
printf '\x14\0\x05\x07\x01\x02\0\x05\x07\x01\0\x05\x07\x02\x01\0\x05\x07\x01\x01\x02\0\x05\x07\0\x05\x07\x01\x02\x01\x01\x02\x10\x00\x40\x30\x01\x55\x01' >corpus/flash_keeper/steps-damaged
