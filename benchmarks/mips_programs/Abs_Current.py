def program(xs):
    """Abs_Current: synthesised by MIPS from a trained RNN (lattice+linear/search). 1 integer state(s)."""
    z0 = 0
    ys = []
    for x in xs:
        z0 = x
        ys.append(abs(z0))
    return ys
