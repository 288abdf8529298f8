"""Per-channel mean and standard deviation of the data sets, as the reference code normalises them.

The registered datasets (:mod:`catrs_adapters.datasets`) put them in the model's
:class:`~catrs_plugin.backbones.normalize.NormalizeLayer`; timm's pretrained configs of our backbones
(:mod:`catrs_adapters.timm_models`) report them. This module imports nothing, so the timm
registration that runs when ``timm`` is imported stays cheap.
"""

CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
#: The reference code feeds MNIST to LeNet unnormalised.
MNIST_MEAN, MNIST_STD = (0.0,), (1.0,)
