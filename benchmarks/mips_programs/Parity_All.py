def program(xs):
    """Parity_All: synthesised by MIPS from a trained RNN (lattice+linear/search). 2 integer state(s)."""
    z0 = 0
    z1 = 0
    ys = []
    for x in xs:
        z0, z1 = x, z0 + z1
        ys.append((z0 ^ (z1 % 2)))
    return ys
