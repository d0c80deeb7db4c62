"""Tenants: the admin-only mapping of dag_id patterns to pushers and the OS user tasks run as.

``load_tenants(config)`` reads and validates the live mapping; ``TenantMap.owner``,
``run_as`` and ``may_push`` answer the scheduler's and the push server's questions.
"""

from __future__ import annotations

from isolate.tenancy.files import (
    DEFAULT_TENANTS_FILE,
    SystemUsers,
    load_tenants,
    read_mapping,
    tenants_path,
    user_groups,
    validate_file,
)
from isolate.tenancy.mapping import (
    TenancyError,
    Tenant,
    TenantHardening,
    TenantLimits,
    TenantMap,
    UserDatabase,
    check_mapping,
    parse_tenants,
)
from isolate.tenancy.patterns import overlap_witness, overlaps

__all__ = [
    "DEFAULT_TENANTS_FILE",
    "SystemUsers",
    "TenancyError",
    "Tenant",
    "TenantHardening",
    "TenantLimits",
    "TenantMap",
    "UserDatabase",
    "check_mapping",
    "load_tenants",
    "overlap_witness",
    "overlaps",
    "parse_tenants",
    "read_mapping",
    "tenants_path",
    "user_groups",
    "validate_file",
]
