def program(xs):
    """Newton_Gravity: synthesised by MIPS from a trained RNN (lattice+linear). 3 integer state(s)."""
    z0 = 0
    z1 = -1
    z2 = -3
    ys = []
    for x in xs:
        z0, z1, z2 = x + z1, 2*x + z2, 3*x - 2*z0 + 3*z1 - 3
        ys.append(z0)
    return ys
