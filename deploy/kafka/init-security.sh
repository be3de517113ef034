#!/bin/bash
# The one-shot `kafka-init` service of docker-compose.yml, run in the Kafka image once the
# broker is healthy: creates the pipeline topics, every principal's SCRAM-SHA-512 credentials
# and their ACLs, connecting as the certificate-authenticated admin (a super user) on the
# broker's mTLS listener. Idempotent: it runs on every `docker compose up`.
#
# Its inputs are files `make compose-secrets` generated (oms_dev/devstack/compose_secrets.py),
# mounted as compose secrets: kafka_topics (name partitions config), kafka_users (principal
# password), kafka_acls (principal resource pattern name operation: the ACL table of
# oms/kafka/acls.py; resource topic, group or cluster), kafka_admin (the admin's client
# settings). Passwords never appear on a command line.
set -euo pipefail

BIN=/opt/kafka/bin
ADMIN=(--bootstrap-server kafka:19093 --command-config /run/secrets/kafka_admin)

while read -r name partitions config; do
  [[ -z "$name" || "$name" == \#* ]] && continue
  configs=()
  if [[ "$config" != "-" ]]; then
    IFS=',' read -ra pairs <<< "$config"
    for pair in "${pairs[@]}"; do configs+=(--config "$pair"); done
  fi
  "$BIN/kafka-topics.sh" "${ADMIN[@]}" --create --if-not-exists --topic "$name" \
    --partitions "$partitions" --replication-factor 1 "${configs[@]}"
done < /run/secrets/kafka_topics

scram=$(mktemp)
trap 'rm -f "$scram"' EXIT
while read -r principal password; do
  [[ -z "$principal" || "$principal" == \#* ]] && continue
  printf 'SCRAM-SHA-512=[iterations=8192,password=%s]\n' "$password" > "$scram"
  "$BIN/kafka-configs.sh" "${ADMIN[@]}" --alter --entity-type users \
    --entity-name "$principal" --add-config-file "$scram"
done < /run/secrets/kafka_users

while read -r principal resource pattern name operation; do
  [[ -z "$principal" || "$principal" == \#* ]] && continue
  case "$resource" in
    topic) target=(--topic "$name") ;;
    group) target=(--group "$name") ;;
    cluster) target=(--cluster) ;;
    *) echo "unknown resource $resource" >&2; exit 1 ;;
  esac
  "$BIN/kafka-acls.sh" "${ADMIN[@]}" --add --allow-principal "User:$principal" \
    --operation "$operation" --resource-pattern-type "$pattern" "${target[@]}"
done < /run/secrets/kafka_acls

echo "kafka-init: topics, users and ACLs in place"
