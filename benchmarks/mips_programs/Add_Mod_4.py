def program(xs):
    """Add_Mod_4: synthesised by MIPS from a trained RNN (lattice+search/table). 2 integer state(s)."""
    G0 = {0: 2, 3: -1, 1: 0, 2: 1}
    z0 = 0
    z1 = 0
    ys = []
    for x in xs:
        z0, z1 = -2*z1 + G0[x], z1 + (1 - (1 ^ x))
        ys.append((z1 % 4))
    return ys
