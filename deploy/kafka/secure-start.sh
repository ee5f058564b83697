#!/usr/bin/env bash
# Starts apache/kafka's broker with SASL/SCRAM and ACLs (see deploy/compose.secure.yml).
# The same properties as `streams stack up` writes with STREAMS_KAFKA_SECURITY=SASL_PLAINTEXT
# (streams/devstack/stack.py), adapted to the compose network's host names. Every listener
# authenticates; nothing is granted to User:ANONYMOUS. The broker's own principals
# (inter-broker 'broker' over SCRAM, 'controller' over PLAIN on a loopback-only controller
# listener) get random passwords kept in the data volume.
set -euo pipefail
: "${KAFKA_ADMIN_PASSWORD:?}"
KAFKA=/opt/kafka
CONF=/tmp/server.properties
LOGS=/tmp/kraft-combined-logs
REAUTH_MS="${KAFKA_REAUTH_MS:-300000}"
mkdir -p "$LOGS"
INTERNAL="$LOGS/.internal-credentials"
if [ ! -f "$INTERNAL" ]; then
  umask 077
  printf 'BROKER_PASSWORD=%s\nCONTROLLER_PASSWORD=%s\n' \
    "$(head -c 24 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')" "$(head -c 24 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')" > "$INTERNAL"
fi
# shellcheck disable=SC1090
. "$INTERNAL"
cat > "$CONF" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:9093
listeners=SASL_PLAINTEXT://:9092,SASL_HOST://:29092,CONTROLLER://127.0.0.1:9093
advertised.listeners=SASL_PLAINTEXT://kafka:9092,SASL_HOST://localhost:29092
listener.security.protocol.map=SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_HOST:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT
inter.broker.listener.name=SASL_PLAINTEXT
controller.listener.names=CONTROLLER
sasl.enabled.mechanisms=SCRAM-SHA-512
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="broker" password="${BROKER_PASSWORD}";
listener.name.sasl_host.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="broker" password="${BROKER_PASSWORD}";
listener.name.controller.sasl.enabled.mechanisms=PLAIN
sasl.mechanism.controller.protocol=PLAIN
listener.name.controller.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="controller" password="${CONTROLLER_PASSWORD}" user_controller="${CONTROLLER_PASSWORD}";
connections.max.reauth.ms=${REAUTH_MS}
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
allow.everyone.if.no.acl.found=false
super.users=User:admin;User:broker;User:controller
log.dirs=${LOGS}
num.partitions=1
auto.create.topics.enable=false
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
transaction.max.timeout.ms=60000
transaction.abort.timed.out.transaction.cleanup.interval.ms=5000
PROPS
cat > /tmp/admin.properties <<PROPS
security.protocol=SASL_PLAINTEXT
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="${KAFKA_ADMIN_PASSWORD}";
PROPS
chmod 600 "$CONF" /tmp/admin.properties
if [ ! -f "$LOGS/meta.properties" ]; then
  "$KAFKA/bin/kafka-storage.sh" format --config "$CONF" --cluster-id=5L6g3nShT-eMCtK--X86sw \
    --add-scram "SCRAM-SHA-512=[name=admin,password=${KAFKA_ADMIN_PASSWORD}]" \
    --add-scram "SCRAM-SHA-512=[name=broker,password=${BROKER_PASSWORD}]"
fi
exec "$KAFKA/bin/kafka-server-start.sh" "$CONF"
