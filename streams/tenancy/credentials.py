"""The broker's SCRAM users and Redis' ACL file, as every control-plane service handles them.

One place for the admin calls that onboarding (tenant principals) and ``principals`` (staff
principals) both make, so a fix to how a user is described, set or saved reaches both.
"""

from __future__ import annotations

from typing import Any

import redis
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (AdminClient, ScramCredentialInfo, ScramMechanism, UserScramCredentialDeletion,
                                   UserScramCredentialUpsertion)

from streams.tenancy.exceptions import OnboardingError

TIMEOUT = 30.0
SCRAM_ITERATIONS = 8192


def wait_all(futures: dict[Any, Any], what: str) -> None:
    """Wait for an admin call's futures; a broker refusal is an OnboardingError naming ``what``."""
    for fut in futures.values():
        try:
            fut.result()
        except KafkaException as exc:
            raise OnboardingError(f"{what} failed: {exc.args[0].str()}") from None


def scram_user_exists(admin: AdminClient, user: str) -> bool:
    futures = admin.describe_user_scram_credentials([user], request_timeout=TIMEOUT)
    try:
        return bool(futures[user].result().scram_credential_infos)
    except KafkaException as exc:
        if exc.args[0].code() == KafkaError.RESOURCE_NOT_FOUND:
            return False
        raise OnboardingError(f"describing Kafka user {user} failed: {exc.args[0].str()}") from None


def upsert_scram_user(admin: AdminClient, user: str, password: str) -> None:
    upsert = UserScramCredentialUpsertion(user, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, SCRAM_ITERATIONS),
                                          password.encode())
    wait_all(admin.alter_user_scram_credentials([upsert], request_timeout=TIMEOUT), "setting the Kafka user")


def delete_scram_user(admin: AdminClient, user: str) -> bool:
    """Delete the user; False if there was none."""
    if not scram_user_exists(admin, user):
        return False
    wait_all(admin.alter_user_scram_credentials([UserScramCredentialDeletion(user, ScramMechanism.SCRAM_SHA_512)],
                                                request_timeout=TIMEOUT), "deleting the Kafka user")
    return True


def save_redis_acl(client: redis.Redis) -> bool:
    """Persist ACL users when Redis has an aclfile (the local secure stack does); False without one
    (users then live until Redis restarts)."""
    try:
        client.execute_command("ACL", "SAVE")
        return True
    except redis.ResponseError:
        return False
