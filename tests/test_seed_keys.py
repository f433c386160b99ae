"""Every seed key of every domain says what happens to its value: a key, Fixed (checked) or Ignored (with a reason)."""
from sslmed.domain import get_domain, list_domains, Ignored

def test_no_seed_key_is_dropped_silently():
    for d in list_domains():
        for k, t in get_domain(d).seed_keys.items():
            assert t is not None, f"{d}: seed key {k!r} maps to None: use Fixed(value, why) or Ignored(why)"
            if isinstance(t, Ignored): assert t.why, (d, k)
