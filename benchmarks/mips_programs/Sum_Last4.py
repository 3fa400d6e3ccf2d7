def program(xs):
    """Sum_Last4: synthesised by MIPS from a trained RNN (lattice+linear). 4 integer state(s)."""
    z0 = 0
    z1 = 0
    z2 = 0
    z3 = 0
    ys = []
    for x in xs:
        z0, z1, z2, z3 = x + z1, x + z2, x + z3, x
        ys.append(z0)
    return ys
