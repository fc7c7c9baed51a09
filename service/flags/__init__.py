"""Flags as code: the flag files in flags/, what they compile to, and a live Unleash server.

Owns the flag definitions and their validation (`definitions`), their compilation into the
Unleash client-features format for the SDK (`client_features`), the flag document both sides are
compared as (`documents`), a flag's state and ramp moves (`state`, `ramp`), plan/apply/export
against Unleash (`plan`, `sync`, `export`, `server_state`), the Admin API boundary
(`unleash_admin`), flag files edited in place (`flag_files`) and the audit trail (`audit`).
May import `store` and `config`/`errors`/`files`; every layer above may import it.
"""
