def program(xs):
    """Add_Mod_6: synthesised by MIPS from a trained RNN (fsm(behaviour1)+search). 6 states."""
    q = 0
    ys = []
    for x in xs:
        q = ((q + x) % 6)
        ys.append(q)
    return ys
