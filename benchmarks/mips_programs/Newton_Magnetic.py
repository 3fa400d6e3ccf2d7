def program(xs):
    """Newton_Magnetic: synthesised by MIPS from a trained RNN (lattice+linear). 4 integer state(s)."""
    z0 = 0
    z1 = 0
    z2 = 0
    z3 = 0
    ys = []
    for x0, x1 in xs:
        z0, z1, z2, z3 = x0 + z2, x1 + z3, 2*x0 + x1 - z0 - z1 + 2*z2 + z3, -x0 + 2*x1 + z0 - z1 - z2 + 2*z3
        ys.append((z0, z1))
    return ys
