"""Deployment descriptions rendered from flags/ and the registry: which bento versions a flag
can route to, each as its own Deployment, and the selector and guard around them.

May import registry, flags and store below it (and config, errors); only the CLI imports it.
"""
