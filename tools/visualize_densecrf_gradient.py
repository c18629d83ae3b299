"""Plot an image, a segmentation, the DenseCRF loss and its gradient w.r.t. the segmentation.

Usage:
    python tools/visualize_densecrf_gradient.py --image photo.jpg [--prob prob.npy|mask.png]
        [--output figure.png] [--sigma_rgb 15] [--sigma_xy 80] [--scale 1.0]
        [--mode normalized|raw] [--backend lattice|exact]

Without --prob a disc in the middle of the image is used as the segmentation.
"""
from patchrefinenet.cli.visualize_densecrf_gradient import main

if __name__ == "__main__":
    main()
