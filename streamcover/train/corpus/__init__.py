"""The versions corpus: tune families from registry material, rendered as cover-like versions.

Works (cliques) come from symbolic families (Bach chorales sharing a melody, Essen
folk-song variants, Irish/Scottish tunes in several collections, game MIDI from Debian)
and from real recordings (pseudo-versions). Each work is rendered several times with
seeded variation (soundfont, programs, key, tempo, arrangement, effects, noise,
background music). ``build.build_corpus`` writes audio, a JSONL manifest, a split file
by work and a licences file under the cache directory, never in the work tree.
"""
