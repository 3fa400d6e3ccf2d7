def program(xs):
    """Parity_Bits_Mod2: synthesised by MIPS from a trained RNN (lattice+linear). 2 integer state(s)."""
    z0 = 1
    z1 = 0
    ys = []
    for x in xs:
        z0, z1 = 4*z1, 1 - z1
        ys.append(1 - z1)
    return ys
