def program(xs):
    """Prev4: synthesised by MIPS from a trained RNN (lattice+linear). 5 integer state(s)."""
    z0 = 0
    z1 = 0
    z2 = 0
    z3 = 0
    z4 = 0
    ys = []
    for x in xs:
        z0, z1, z2, z3, z4 = x, z0, z1, z2, z3
        ys.append(z4)
    return ys
