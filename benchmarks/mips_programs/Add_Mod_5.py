def program(xs):
    """Add_Mod_5: synthesised by MIPS from a trained RNN (fsm(behaviour1)+search). 5 states."""
    q = 0
    ys = []
    for x in xs:
        q = ((q + x) % 5)
        ys.append(q)
    return ys
