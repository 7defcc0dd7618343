"""Partial fine-tuning: the top blocks of a backbone trained from cached split-point activations.

``blocks`` splits any backbone into stem -> blocks -> neck; ``activations`` caches the input of the
first trained block in the store; ``train`` runs LP-FT on the top; ``saved`` stores and reloads the
result; ``export`` writes a plain-torch checkpoint. Nothing here imports torch at import time.
"""
