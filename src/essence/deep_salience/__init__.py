"""Deep Salience (Bittner, McFee, Salamon, Li, Bello, ISMIR 2017): HCQT + fully convolutional network that maps
audio to a pitch-salience map, decoded into multi-f0, melody or bass lines.

    from essence.deep_salience import HCQT, SalienceNet, load_keras_h5, load_pretrained, Predictor, decode
    model, tau = load_pretrained("multif0")                  # essence's own model, shipped with the package
    model = load_keras_h5("multif0.h5", task="multif0")     # or the original released weights, via h5py (tau 0.3)
    salience = Predictor(model).salience(load_audio("song.wav"))
    times, f0s = decode(salience, "multif0", threshold=tau)
"""

from essence.deep_salience.decode import decode, multif0_peaks, single_f0, sweep_threshold
from essence.deep_salience.hcqt import HCQT, freq_grid, hcqt_reference, time_grid
from essence.deep_salience.model import SalienceNet, WeightsError, load_keras_h5
from essence.deep_salience.predict import Predictor, load_audio, load_pretrained, prepare_audio

__all__ = ["HCQT", "hcqt_reference", "freq_grid", "time_grid", "SalienceNet", "load_keras_h5", "load_pretrained",
           "WeightsError", "Predictor", "load_audio", "prepare_audio", "decode", "multif0_peaks", "single_f0",
           "sweep_threshold"]
