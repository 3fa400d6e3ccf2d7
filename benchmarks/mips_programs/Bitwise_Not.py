def program(xs):
    """Bitwise_Not: synthesised by MIPS from a trained RNN (lattice+linear). 1 integer state(s)."""
    z0 = 1
    ys = []
    for x in xs:
        z0 = 1 - x
        ys.append(z0)
    return ys
