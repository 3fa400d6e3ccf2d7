def program(xs):
    """Bitwise_Or: synthesised by MIPS from a trained RNN (lattice+linear/search). 1 integer state(s)."""
    z0 = 1
    ys = []
    for x0, x1 in xs:
        z0 = 2*x0 + 2*x1 + 1
        ys.append((1 % z0))
    return ys
