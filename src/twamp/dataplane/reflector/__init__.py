"""The Session-Reflector: `pure.py` (Python twin) and `compiled.pyx` (Cython twin); import it
through `twamp.dataplane`, never directly."""
