// placeholder until web/ is built
