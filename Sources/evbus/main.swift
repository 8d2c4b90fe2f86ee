print("evbus")
