def program(xs):
    """Evens_Counter: synthesised by MIPS from a trained RNN (lattice+linear/search). 1 integer state(s)."""
    z0 = 0
    ys = []
    for x in xs:
        z0 = z0 + (1 - (x % 2))
        ys.append(z0)
    return ys
