#!/bin/sh
# Sign an order request for oms.order-requests with nothing but a shell and openssl.
#
#   sign.sh KEY_ID KEY TIMESTAMP_MS NONCE BODY_FILE
#
# prints the lower-case hex HMAC-SHA256 to put in the record's `oms-signature` header, with
# the record's value being exactly the bytes of BODY_FILE. The other three headers carry
# KEY_ID (`oms-key-id`), TIMESTAMP_MS (`oms-timestamp`) and NONCE (`oms-nonce`).
set -eu
[ $# -eq 5 ] || { echo "usage: $0 KEY_ID KEY TIMESTAMP_MS NONCE BODY_FILE" >&2; exit 2; }
key_id=$1 key=$2 ts=$3 nonce=$4 body=$5
{ printf 'oms-hmac-sha256-v2\n%s\n%s\n%s\n' "$key_id" "$ts" "$nonce"; cat "$body"; } \
  | openssl dgst -sha256 -hmac "$key" -r | cut -d' ' -f1
