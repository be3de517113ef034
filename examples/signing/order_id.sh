#!/bin/sh
# The order id the OMS derives for a submit: order_id.sh ACCOUNT_ID REQUEST_ID
# "o-" + hex BLAKE2b with a 12-byte (96-bit) digest of ACCOUNT_ID, a NUL byte, REQUEST_ID.
set -eu
[ $# -eq 2 ] || { echo "usage: $0 ACCOUNT_ID REQUEST_ID" >&2; exit 2; }
printf 'o-%s\n' "$(printf '%s\0%s' "$1" "$2" | b2sum -l 96 | cut -d' ' -f1)"
