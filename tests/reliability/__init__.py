"""Reliability tests: a soak under faults and a crash loop, against `relay serve` itself."""
