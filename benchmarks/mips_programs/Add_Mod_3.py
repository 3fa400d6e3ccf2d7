def program(xs):
    """Add_Mod_3: synthesised by MIPS from a trained RNN (fsm(behaviour1)+search). 3 states."""
    q = 0
    ys = []
    for x in xs:
        q = ((q + x) % 3)
        ys.append(q)
    return ys
