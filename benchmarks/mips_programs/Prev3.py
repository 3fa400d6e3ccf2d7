def program(xs):
    """Prev3: synthesised by MIPS from a trained RNN (lattice+linear). 4 integer state(s)."""
    z0 = 0
    z1 = 0
    z2 = 0
    z3 = 0
    ys = []
    for x in xs:
        z0, z1, z2, z3 = z1, z2, z3, x
        ys.append(z0)
    return ys
