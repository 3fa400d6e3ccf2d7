def program(xs):
    """Bitwise_Xor: synthesised by MIPS from a trained RNN (lattice+linear/search). 1 integer state(s)."""
    z0 = 0
    ys = []
    for x0, x1 in xs:
        z0 = x0 + x1
        ys.append((z0 % 2))
    return ys
