def program(xs):
    """Prev2: synthesised by MIPS from a trained RNN (lattice+linear). 3 integer state(s)."""
    z0 = 0
    z1 = 0
    z2 = 0
    ys = []
    for x in xs:
        z0, z1, z2 = z1, z2, x
        ys.append(z0)
    return ys
