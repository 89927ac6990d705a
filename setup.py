from glob import glob

from setuptools import find_packages, setup

package_name = 'occo_ros'
# training/ installs as `occo_training`: a top-level `training` package could collide with
# another one on a robot. Inside the folder imports are relative, so both names work.
training_package = 'occo_training'

setup(
    name=package_name,
    version='0.2.0',
    packages=find_packages(include=[package_name, package_name + '.*']) + [training_package],
    package_dir={training_package: 'training'},
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + package_name]),
        ('share/' + package_name, ['package.xml']),
        ('share/' + package_name + '/launch', glob('launch/*.launch.py')),
        ('share/' + package_name + '/config', glob('config/*.yaml') + glob('config/*.service')),
        ('share/' + package_name + '/rviz', glob('rviz/*.rviz')),
        ('share/' + package_name + '/models',
         glob('models/*.pt') + glob('models/*.onnx') + glob('models/*.md')),
    ],
    install_requires=['setuptools'],
    zip_safe=True,
    maintainer='occo_ros maintainers',
    maintainer_email='maintainers@occo-ros.invalid',
    description='Real-time thermal + visible image fusion (OCCO / FIFN) for ROS 2',
    license='Apache-2.0',
    extras_require={'test': ['pytest']},
    entry_points={
        'console_scripts': [
            'fusion_node = occo_ros.ros.fusion_node:main',
            'fusion_lifecycle_node = occo_ros.ros.fusion_lifecycle_node:main',
            'synthetic_cameras = occo_ros.ros.synthetic_cameras:main',
            'occo-fuse = occo_ros.cli.fuse:main',
            'occo-demo = occo_ros.ros.demo:main',
            'occo-export = occo_ros.cli.export:main',
            'occo-build-engine = occo_ros.cli.build_engine:main',
            'occo-bag = occo_ros.cli.bag:main',
            'occo-calibrate = occo_ros.cli.calibrate:main',
            'occo-params = occo_ros.cli.params:main',
            'occo-eval = occo_training.evaluate:main',
            'occo-train = occo_training.train:main',
            'occo-masks = occo_training.masks:main',
        ],
    },
)
