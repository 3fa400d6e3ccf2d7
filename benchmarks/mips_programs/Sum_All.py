def program(xs):
    """Sum_All: synthesised by MIPS from a trained RNN (lattice+linear). 1 integer state(s)."""
    z0 = 0
    ys = []
    for x in xs:
        z0 = x + z0
        ys.append(z0)
    return ys
