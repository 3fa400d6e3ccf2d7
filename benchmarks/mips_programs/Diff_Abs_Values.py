def program(xs):
    """Diff_Abs_Values: synthesised by MIPS from a trained RNN (lattice+linear/search). 2 integer state(s)."""
    z0 = 0
    z1 = 0
    ys = []
    for x in xs:
        z0, z1 = x, z0
        ys.append((abs(z0) - abs(z1)))
    return ys
