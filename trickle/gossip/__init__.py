"""SWIM membership with Lifeguard: who is alive, where it listens, which tags it carries."""
