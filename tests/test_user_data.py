"""The user's own files through scripts/train.py and scripts/predict.py.

Real shared data is written into user formats with other column names (ESOL as a `mol,logS`
CSV, METABRIC as a `months,died,...` CSV, PneumoniaMNIST as a folder of PNGs, Medical Abstracts
as JSON Lines), each trained through scripts/train.py on the built-in loader's split, which must
give the built-in run's test metrics; then scripts/predict.py scores the test rows, written to a
file of their own, and must give the run's test metrics again.
"""

import csv
import importlib.util
import json
import os

import numpy as np
import pytest

from conftest import REPO
from jmed.data import deepsurv, medical_abstracts, splits
from jmed.data.datasets import load_dataset


def _script(name):
  spec = importlib.util.spec_from_file_location(f'{name}_script', REPO / 'scripts' / f'{name}.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


TRAIN = _script('train')
PREDICT = _script('predict')


def _train(argv, output_dir):
  assert TRAIN.main([*argv, '--output-dir', str(output_dir), '--no-progress']) == 0
  with open(output_dir / 'summary.json') as f:
    return json.load(f)


def _predict(run_dir, path, capsys):
  capsys.readouterr()
  output = run_dir / 'predictions.csv'
  assert PREDICT.main(['--run-dir', str(run_dir), '--data', str(path), '--output',
                       str(output)]) == 0
  printed = capsys.readouterr().out
  metrics = json.loads(printed[printed.index('{'):])
  with open(output) as f:
    rows = list(csv.DictReader(f))
  return metrics, rows


def _same_test_metrics(user, builtin, names, tol=1e-4):
  for name in names:
    assert user[f'test_{name}'] == pytest.approx(builtin[f'test_{name}'], abs=tol), name


def _write_csv(path, header, rows):
  with open(path, 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(header)
    writer.writerows(rows)


# ---------------------------------------------------------------- ESOL as `mol,logS`


def test_esol_csv_with_other_column_names(tmp_path, data_dir, capsys):
  source = data_dir / 'moleculenet' / 'delaney-processed.csv'
  with open(source) as f:
    table = list(csv.DictReader(f))
  target = 'measured log solubility in mols per litre'
  user_csv = tmp_path / 'solubility.csv'
  _write_csv(user_csv, ['mol', 'logS'], [(r['smiles'], r[target]) for r in table])
  common = ['--model', 'mlp', '--model-kwargs', '{"hidden": [32]}', '--molecule-features',
            'fingerprint', '--molecule-fingerprint-bits', '256', '--epochs', '2',
            '--batch-size', '32', '--eval-batch-size', '128', '--optimizer', 'adam',
            '--learning-rate', '1e-3', '--data-dir', str(data_dir)]
  builtin = _train([*common, '--dataset', 'esol', '--molecule-split', 'random'],
                   tmp_path / 'builtin')
  user = _train([*common, '--data', str(user_csv), '--smiles-column', 'mol', '--label-column',
                 'logS', '--split', 'random'], tmp_path / 'user')
  assert user['split']['sizes'] == {'train': 902, 'validation': 113, 'test': 113}
  _same_test_metrics(user, builtin, ('rmse', 'mae', 'r2'))

  # The test rows alone, in a file without a split: predict.py scores them as the run did.
  test_rows = splits.random(len(table), 0, (0.8, 0.1, 0.1))['test']
  test_csv = tmp_path / 'solubility_test.csv'
  _write_csv(test_csv, ['mol', 'logS'], [(table[i]['smiles'], table[i][target])
                                          for i in test_rows])
  metrics, rows = _predict(tmp_path / 'user', test_csv, capsys)
  assert len(rows) == len(test_rows) and 'predicted_logS' in rows[0]
  assert metrics['rmse'] == pytest.approx(user['test_rmse'], abs=1e-4)


# ---------------------------------------------------------------- METABRIC as `months,died,...`


def _metabric_rows(data_dir):
  """(header, rows) of METABRIC as a CSV with the built-in split in a 'cohort' column."""
  path = deepsurv.path_of('metabric', str(data_dir))
  groups = deepsurv.read(path)
  x, t, e = groups['train']
  train, valid = deepsurv._split(e, 0.2, 0, path)  # pylint: disable=protected-access
  cohort = np.empty(len(t), object)
  cohort[train], cohort[valid] = 'train', 'validation'
  header = ['months', 'died'] + [f'marker_{i}' for i in range(x.shape[1])] + ['cohort']
  rows = [[repr(float(t[i])), int(e[i]), *map(repr, x[i].tolist()), cohort[i]] for i in range(len(t))]
  tx, tt, te = groups['test']
  rows += [[repr(float(tt[i])), int(te[i]), *map(repr, tx[i].tolist()), 'test'] for i in range(len(tt))]
  return header, rows


def test_metabric_csv_survival(tmp_path, data_dir, capsys):
  header, rows = _metabric_rows(data_dir)
  user_csv = tmp_path / 'cohort.csv'
  _write_csv(user_csv, header, rows)
  common = ['--model', 'mlp', '--model-kwargs', '{"hidden": [16]}', '--epochs', '2',
            '--batch-size', '128', '--eval-batch-size', '128', '--optimizer', 'adam',
            '--learning-rate', '1e-3']
  builtin = _train([*common, '--dataset', 'metabric', '--data-dir', str(data_dir)],
                   tmp_path / 'builtin')
  user = _train([*common, '--data', str(user_csv), '--time-column', 'months', '--event-column',
                 'died', '--split-column', 'cohort'], tmp_path / 'user')
  assert user['task'] == 'survival'
  assert user['split']['sizes'] == {'train': 1218, 'validation': 305, 'test': 381}
  _same_test_metrics(user, builtin, ('c_index',), tol=1e-3)

  test_csv = tmp_path / 'cohort_test.csv'
  _write_csv(test_csv, header[:-1], [r[:-1] for r in rows if r[-1] == 'test'])
  metrics, predicted = _predict(tmp_path / 'user', test_csv, capsys)
  assert metrics['c_index'] == pytest.approx(user['test_c_index'], abs=1e-6)
  curves = [k for k in predicted[0] if k.startswith('survival_at_')]
  assert len(curves) == 3 and 'risk' in predicted[0]
  early, late = (np.array([float(r[c]) for r in predicted]) for c in (curves[0], curves[-1]))
  assert np.all((late <= early + 1e-9) & (late >= 0) & (early <= 1))


# ---------------------------------------------------------------- PneumoniaMNIST as PNG folders


def _write_png_folders(dataset, root):
  from PIL import Image  # pylint: disable=g-import-not-at-top
  names = ('normal', 'pneumonia')
  for split, (images, labels) in dataset.splits.items():
    for i, (image, label) in enumerate(zip(images, labels)):
      folder = root / split / names[label]
      folder.mkdir(parents=True, exist_ok=True)
      Image.fromarray(np.round(image[..., 0] * 255).astype(np.uint8)).save(folder / f'{i:05d}.png')


def test_pneumoniamnist_png_folders(tmp_path, data_dir, capsys):
  dataset = load_dataset('pneumoniamnist', data_dir=str(data_dir))
  root = tmp_path / 'xrays'
  _write_png_folders(dataset, root)
  common = ['--model', 'seed_cnn', '--epochs', '1', '--max-steps', '30', '--batch-size', '32',
            '--eval-batch-size', '256']
  builtin = _train([*common, '--dataset', 'pneumoniamnist', '--data-dir', str(data_dir)],
                   tmp_path / 'builtin')
  user = _train([*common, '--data', str(root)], tmp_path / 'user')
  assert user['split']['sizes'] == {'train': 4708, 'validation': 524, 'test': 624}
  _same_test_metrics(user, builtin, ('auroc', 'accuracy'))

  metrics, rows = _predict(tmp_path / 'user', root / 'test', capsys)
  assert len(rows) == 624 and {'prob_normal', 'prob_pneumonia', 'predicted'} <= set(rows[0])
  assert metrics['auroc'] == pytest.approx(user['test_auroc'], abs=1e-5)


# ---------------------------------------------------------------- Medical Abstracts as JSONL


def test_medical_abstracts_jsonl(tmp_path, data_dir, capsys):
  source = data_dir / 'medical_abstracts' / medical_abstracts.TEST_FILE
  with open(source) as f:
    table = list(csv.DictReader(f))
  labels = np.array([int(r['condition_label']) for r in table])
  split_of = np.empty(len(table), object)
  for split, index in medical_abstracts.split_indices(labels - 1).items():
    split_of[index] = split
  user_jsonl = tmp_path / 'abstracts.jsonl'
  with open(user_jsonl, 'w') as f:
    for row, split in zip(table, split_of):
      f.write(json.dumps({'abstract': row['medical_abstract'],
                          'condition': int(row['condition_label']), 'part': split}) + '\n')
  common = ['--model', 'text_cnn', '--model-kwargs', '{"embed_dim": 16, "features": 16}',
            '--max-length', '64', '--epochs', '1', '--max-steps', '20', '--batch-size', '32',
            '--eval-batch-size', '128', '--optimizer', 'adam', '--learning-rate', '3e-3']
  builtin = _train([*common, '--dataset', 'medical_abstracts', '--data-dir', str(data_dir)],
                   tmp_path / 'builtin')
  user = _train([*common, '--data', str(user_jsonl), '--text-column', 'abstract',
                 '--label-column', 'condition', '--split-column', 'part'], tmp_path / 'user')
  assert user['split']['sizes'] == {'train': 2021, 'validation': 289, 'test': 578}
  _same_test_metrics(user, builtin, ('accuracy', 'f1', 'auroc'))

  test_jsonl = tmp_path / 'abstracts_test.jsonl'
  with open(user_jsonl) as f, open(test_jsonl, 'w') as out:
    out.writelines(line for line in f if json.loads(line)['part'] == 'test')
  metrics, rows = _predict(tmp_path / 'user', test_jsonl, capsys)
  assert len(rows) == 578
  assert metrics['f1'] == pytest.approx(user['test_f1'], abs=1e-5)


def test_predict_refuses_a_builtin_run_and_a_missing_run(tmp_path, capsys):
  assert PREDICT.main(['--run-dir', str(tmp_path / 'nothing'), '--data', str(tmp_path)]) == 1
  assert 'config.json' in capsys.readouterr().err
  os.makedirs(tmp_path / 'run')
  with open(tmp_path / 'run' / 'config.json', 'w') as f:
    json.dump({'dataset': 'pneumoniamnist'}, f)
  assert PREDICT.main(['--run-dir', str(tmp_path / 'run'), '--data', str(tmp_path)]) == 1
  assert 'preprocessing.json' in capsys.readouterr().err


# ---------------------------------------------------------------- bad input: one line, nothing written


def _table(path, text):
  path.write_text(text)
  return path


def _bad_files(tmp_path):
  """(case, argv naming the bad file, what the one error line must name)."""
  good = 'age,sex,outcome\n' + ''.join(f'{20 + i},{"mf"[i % 2]},{i % 2}\n' for i in range(40))
  cases = []
  path = _table(tmp_path / 'wrong_column.csv', good)
  cases.append(('wrong label column', ['--data', str(path), '--label-column', 'outcmoe'],
                [str(path), "'outcmoe'", 'header']))
  path = _table(tmp_path / 'text_cell.csv', good.replace('\n23,', '\nabc,'))
  cases.append(('non-numeric cell', ['--data', str(path), '--label-column', 'outcome'],
                [str(path), 'row 4', "'age'", "'abc'"]))
  path = _table(tmp_path / 'inf_cell.csv', good.replace('\n25,', '\ninf,'))
  cases.append(('infinite cell', ['--data', str(path), '--label-column', 'outcome'],
                [str(path), 'row 6', "'age'"]))
  survival = 'x,months,died\n' + ''.join(f'{i},{i + 1},{i % 2}\n' for i in range(40))
  path = _table(tmp_path / 'negative_time.csv', survival.replace('\n7,8,', '\n7,-8,'))
  cases.append(('negative time', ['--data', str(path), '--time-column', 'months',
                                  '--event-column', 'died'], [str(path), 'row 8', "'months'"]))
  path = _table(tmp_path / 'event_two.csv', survival.replace('\n9,10,1', '\n9,10,2'))
  cases.append(('event not 0/1', ['--data', str(path), '--time-column', 'months',
                                  '--event-column', 'died'], [str(path), 'row 10', "'died'"]))
  path = _table(tmp_path / 'empty.csv', '')
  cases.append(('empty file', ['--data', str(path), '--label-column', 'outcome'],
                [str(path), 'empty']))
  split = 'x,label,split\n' + ''.join(f'{i},{"ab"[i % 2]},train\n' for i in range(20)) + (
      '1,a,validation\n2,b,validation\n3,c,test\n4,a,test\n')
  path = _table(tmp_path / 'unseen.csv', split)
  cases.append(('label unseen in train', ['--data', str(path), '--label-column', 'label',
                                          '--task', 'multiclass'],
                [str(path), 'row 23', "'label'", "'c'"]))
  path = _table(tmp_path / 'mols.csv', 'mol,logS\nCCO,1.0\nC1CC,2.0\nCCC,0.5\n' +
                ''.join(f'{"C" * (i + 1)}O,{i / 10}\n' for i in range(20)))
  cases.append(('unparsable SMILES', ['--data', str(path), '--smiles-column', 'mol',
                                      '--label-column', 'logS', '--no-molecule-skip-invalid'],
                [str(path), 'row 2', "'mol'", "'C1CC'"]))
  path = tmp_path / 'notes.jsonl'
  path.write_text(''.join(json.dumps({'text': '' if i == 4 else f'note {i}', 'dx': i % 2}) + '\n'
                          for i in range(30)))
  cases.append(('empty text', ['--data', str(path), '--label-column', 'dx'],
                [str(path), 'row 5', "'text'"]))
  folder = tmp_path / 'images'
  for name in ('a', 'b'):
    (folder / name).mkdir(parents=True)
    for i in range(5):
      _png(folder / name / f'{i}.png')
  (folder / 'a' / '0.png').write_bytes(b'\x89PNG\r\n\x1a\n not an image')
  cases.append(('unreadable image', ['--data', str(folder)], [str(folder / 'a' / '0.png')]))
  return cases


def _png(path):
  from PIL import Image  # pylint: disable=g-import-not-at-top
  Image.fromarray(np.zeros((8, 8), np.uint8)).save(path)


def test_bad_user_files_give_one_line_and_write_nothing(tmp_path, capsys):
  for case, argv, named in _bad_files(tmp_path):
    output_dir = tmp_path / f'run_{case.replace(" ", "_")}'
    capsys.readouterr()
    status = TRAIN.main([*argv, '--model', 'mlp', '--output-dir', str(output_dir),
                         '--batch-size', '4', '--no-progress'])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith('error:')]
    assert status == 1 and len(errors) == 1, (case, err)
    assert 'Traceback' not in err, case
    for text in named:
      assert text in errors[0], (case, text, errors[0])
    assert not output_dir.exists(), case
