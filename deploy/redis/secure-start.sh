#!/bin/sh
# Redis with ACL users kept in /data/users.acl (see deploy/compose.secure.yml): `streams` has every
# right, the passwordless default user is off, tenant users are added by `streams tenants create`.
set -eu
: "${REDIS_ADMIN_PASSWORD:?}"
ACL=/data/users.acl
touch "$ACL"
chmod 600 "$ACL"
grep -v -e '^user streams ' -e '^user default ' "$ACL" > /tmp/tenants.acl || true
{
  echo "user streams on >${REDIS_ADMIN_PASSWORD} ~* &* +@all"
  echo "user default off nopass resetkeys -@all"
  cat /tmp/tenants.acl
} > "$ACL"
# Persistence as in docker-compose.yml and the local stack: AOF, no RDB snapshots, plain-RESP AOF base.
exec redis-server --appendonly yes --appendfsync everysec --save "" --aof-use-rdb-preamble no --aclfile "$ACL"
