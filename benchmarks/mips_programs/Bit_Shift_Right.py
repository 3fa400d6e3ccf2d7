def program(xs):
    """Bit_Shift_Right: synthesised by MIPS from a trained RNN (lattice+linear). 2 integer state(s)."""
    z0 = 0
    z1 = 0
    ys = []
    for x in xs:
        z0, z1 = z1, x
        ys.append(z0)
    return ys
