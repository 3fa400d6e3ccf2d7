def program(xs):
    """Sum_Last7: synthesised by MIPS from a trained RNN (lattice+linear). 7 integer state(s)."""
    z0 = 0
    z1 = 0
    z2 = 0
    z3 = 0
    z4 = 0
    z5 = 0
    z6 = 0
    ys = []
    for x in xs:
        z0, z1, z2, z3, z4, z5, z6 = x + z1, x + z2, x + z3, x + z4, x + z5, x + z6, x
        ys.append(z0)
    return ys
